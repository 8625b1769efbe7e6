// Tokenizes files with the real TextMate engine (vscode-textmate + Oniguruma) and
// prints, per file, the innermost scope of every character of every line as JSON.
// Used by the Python tests (tests/editors); needs `npm install` in this folder.
"use strict";
const fs = require("fs");
const path = require("path");
const vsctm = require("vscode-textmate");
const oniguruma = require("vscode-oniguruma");

const wasm = fs.readFileSync(require.resolve("vscode-oniguruma/release/onig.wasm")).buffer;
const onigLib = oniguruma.loadWASM(wasm).then(() => ({
  createOnigScanner: (patterns) => new oniguruma.OnigScanner(patterns),
  createOnigString: (s) => new oniguruma.OnigString(s),
}));
const registry = new vsctm.Registry({
  onigLib,
  loadGrammar: async () => {
    const file = path.join(__dirname, "..", "syntaxes", "kmr.tmLanguage.json");
    return vsctm.parseRawGrammar(fs.readFileSync(file, "utf8"), file);
  },
});

registry.loadGrammar("source.kmr").then((grammar) => {
  const out = {};
  for (const file of process.argv.slice(2)) {
    let state = vsctm.INITIAL;
    out[file] = fs.readFileSync(file, "utf8").split("\n").map((line) => {
      const r = grammar.tokenizeLine(line, state);
      state = r.ruleStack;
      const scopes = new Array(line.length).fill(null);
      for (const tok of r.tokens) {
        const inner = tok.scopes[tok.scopes.length - 1];
        for (let i = tok.startIndex; i < Math.min(tok.endIndex, line.length); i++) {
          scopes[i] = inner === "source.kmr" ? null : inner;
        }
      }
      return scopes;
    });
  }
  process.stdout.write(JSON.stringify(out));
});
