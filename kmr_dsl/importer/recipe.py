"""Reading an llm-compressor or SparseML recipe, keeping where every value was written.

Contract: `read_recipe(text, file) -> (Recipe | None, diagnostics)`. The YAML is
composed (never constructed: no tag runs code, `!GMPruningModifier` is just a tag) into
`Node`s that carry their YAML line and column (1-based), so every later diagnostic
points at the key or value it is about. A SparseML recipe may be a markdown file with
the YAML as front matter between `---` lines; its line numbers are kept.

Recognized shapes:
- llm-compressor: top-level stages (`NAME_stage:` or any mapping holding
  `*_modifiers:`/`modifiers:`), each with an optional `run_type` and groups of
  modifiers `{ModifierName: {options}}`; or the groups at the top level (one stage).
- SparseML: top-level `modifiers:` (and `*_modifiers:`) lists of `!ModifierName` tagged
  mappings, with top-level variables (`num_epochs: 10`) that `eval(name)` values use.
Anything else is KMR530 (not a recipe), located at the document.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import yaml

from kmr_dsl.diagnostics import Diagnostic, Span, error


@dataclass
class Node:
    """A YAML value with its place: `value` is a str/int/float/bool/None, a list of Nodes,
    or a dict of key str -> Node (keys' own places in `keys`)."""

    value: object
    span: Span
    tag: str | None = None
    keys: dict[str, Span] = field(default_factory=dict)

    def get(self, key: str) -> "Node | None":
        return self.value.get(key) if isinstance(self.value, dict) else None

    def plain(self):
        """The value without places (lists and dicts converted recursively)."""
        if isinstance(self.value, dict):
            return {k: v.plain() for k, v in self.value.items()}
        if isinstance(self.value, list):
            return [v.plain() for v in self.value]
        return self.value


@dataclass
class Modifier:
    name: str              # e.g. GPTQModifier
    options: Node          # a mapping Node (possibly empty)
    span: Span             # where the modifier's name is written


@dataclass
class Stage:
    name: str
    run_type: str | None   # oneshot | train | None
    modifiers: list[Modifier]
    span: Span


@dataclass
class Recipe:
    file: str
    stages: list[Stage]
    variables: dict[str, object]   # SparseML top-level values, for eval(name)
    flavour: str                   # "llm-compressor" | "sparseml"


def _span(file: str, node, line_offset: int) -> Span:
    s, e = node.start_mark, node.end_mark
    return Span(file, s.line + 1 + line_offset, s.column + 1, e.line + 1 + line_offset, e.column + 1)


def _scalar(node: yaml.ScalarNode):
    # the tags PyYAML's safe resolver gave (YAML 1.1: bools, ints, floats, null)
    tag = node.tag
    value = node.value
    if tag.endswith(":null"):
        return None
    if tag.endswith(":bool"):
        return value.lower() in ("true", "yes", "on")
    if tag.endswith(":int"):
        try:
            return int(value.replace("_", ""), 0)
        except ValueError:
            return value
    if tag.endswith(":float"):
        try:
            return float(value.replace("_", ""))
        except ValueError:
            return value
    return value


def _convert(node, file: str, off: int) -> Node:
    span = _span(file, node, off)
    tag = node.tag if node.tag and node.tag.startswith("!") and not node.tag.startswith("!!") else None
    if isinstance(node, yaml.MappingNode):
        out, keys = {}, {}
        for k, v in node.value:
            key = str(_scalar(k)) if isinstance(k, yaml.ScalarNode) else str(k.value)
            out[key] = _convert(v, file, off)
            keys[key] = _span(file, k, off)
        return Node(out, span, tag, keys)
    if isinstance(node, yaml.SequenceNode):
        return Node([_convert(v, file, off) for v in node.value], span, tag)
    return Node(_scalar(node), span, tag)


def _front_matter(text: str) -> tuple[str, int]:
    """SparseML's markdown recipes: the YAML between the first two `---` lines (after a
    license comment, say); the line offset keeps diagnostics on the file's own lines."""
    lines = text.split("\n")
    marks = [i for i, line in enumerate(lines) if line.strip() == "---"]
    if len(marks) >= 2:
        chunk = "\n".join(lines[marks[0] + 1:marks[1]])
        if "modifiers" in chunk:
            return chunk, marks[0] + 1
    return text, 0


def _compose(text: str, file: str) -> tuple[Node | None, list[Diagnostic]]:
    text, off = _front_matter(text)
    try:
        docs = [d for d in yaml.compose_all(text, Loader=yaml.SafeLoader) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        span = Span(file, mark.line + 1 + off, mark.column + 1, mark.line + 1 + off, mark.column + 2) if mark \
            else Span.unknown(file)
        return None, [error("KMR530", span, "the recipe is not valid YAML", str(exc).splitlines()[0])]
    if not docs:
        return None, [error("KMR530", Span.unknown(file), "the recipe is empty")]
    return _convert(docs[0], file, off), []


def _modifiers(group: Node, diags: list[Diagnostic]) -> list[Modifier]:
    """`{Name: {opts}}` (llm-compressor) or `[!Name {opts}, {Name: {opts}}]` (SparseML)."""
    out = []
    if isinstance(group.value, dict):
        for name, opts in group.value.items():
            out.append(Modifier(name, _options(opts), group.keys[name]))
    elif isinstance(group.value, list):
        for item in group.value:
            if item.tag:
                out.append(Modifier(item.tag.lstrip("!"), _options(item), item.span))
            elif isinstance(item.value, dict) and len(item.value) == 1:
                (name, opts), = item.value.items()
                out.append(Modifier(name, _options(opts), item.keys[name]))
            else:
                diags.append(error("KMR530", item.span, "a modifier list entry must be `!ModifierName` or "
                                   "`ModifierName: {options}`"))
    else:
        diags.append(error("KMR530", group.span, "a modifier group must be a mapping or a list"))
    return out


def _options(node: Node) -> Node:
    if isinstance(node.value, dict):
        return node
    return Node({}, node.span, node.tag)  # `GPTQModifier:` with nothing under it


def _is_group(key: str) -> bool:
    return key == "modifiers" or key.endswith("_modifiers")


def read_recipe(text: str, file: str) -> tuple[Recipe | None, list[Diagnostic]]:
    root, diags = _compose(text, file)
    if root is None:
        return None, diags
    if not isinstance(root.value, dict):
        return None, [error("KMR530", root.span, "a recipe is a mapping of stages or modifier groups",
                            hint="pass an llm-compressor or SparseML recipe.yaml")]
    stages: list[Stage] = []
    top_groups = [k for k in root.value if _is_group(k)]
    flavour = "llm-compressor"
    if top_groups:
        mods = []
        for k in top_groups:
            group = root.value[k]
            if isinstance(group.value, list) and any(i.tag for i in group.value):
                flavour = "sparseml"
            mods += _modifiers(group, diags)
        stages.append(Stage("recipe", None, mods, root.span))
    for key, value in root.value.items():
        if _is_group(key) or not isinstance(value.value, dict):
            continue
        groups = [k for k in value.value if _is_group(k)]
        if not groups:
            continue
        run_type = value.get("run_type")
        mods = []
        for g in groups:
            mods += _modifiers(value.value[g], diags)
        stages.append(Stage(key, run_type.value if run_type else None, mods, root.keys[key]))
    if not any(s.modifiers for s in stages):
        return None, diags + [error("KMR530", root.span, "no modifiers found: this YAML is not a recipe",
                                    "expected stages with `*_modifiers:` groups (llm-compressor) or a "
                                    "`modifiers:` list (SparseML)",
                                    hint="pass an llm-compressor or SparseML recipe.yaml")]
    variables = {k: v.plain() for k, v in root.value.items()
                 if not _is_group(k) and not isinstance(v.value, (dict, list))}
    return Recipe(file, stages, variables, flavour), diags


__all__ = ["Modifier", "Node", "Recipe", "Stage", "read_recipe"]
