// Starts `kmr lsp` for .kmr files. Models are loaded (their loader's code runs) only
// when the workspace is trusted and `kmr.loadModels` is on: trust is the user's
// decision in the editor, never something a file says.
"use strict";
const vscode = require("vscode");
const { LanguageClient } = require("vscode-languageclient/node");

let client;

function serverOptions() {
  const config = vscode.workspace.getConfiguration("kmr");
  const [command, ...base] = config.get("command", ["kmr"]);
  const args = [...base, "lsp"];
  if (vscode.workspace.isTrusted && config.get("loadModels", true)) {
    args.push("--load-models");
  }
  const rlimit = config.get("rlimit", null);
  if (Number.isInteger(rlimit) && rlimit > 0) {
    args.push("--rlimit", String(rlimit));
  }
  return { command, args };
}

async function start() {
  client = new LanguageClient("kmr", "KMR language server", serverOptions(), {
    documentSelector: [{ scheme: "file", language: "kmr" }, { scheme: "untitled", language: "kmr" }],
  });
  await client.start();
}

async function restart() {
  if (client) {
    await client.stop();
  }
  await start();
}

function activate(context) {
  context.subscriptions.push(
    vscode.workspace.onDidGrantWorkspaceTrust(restart),
    vscode.workspace.onDidChangeConfiguration((e) => {
      if (e.affectsConfiguration("kmr")) {
        restart();
      }
    }),
  );
  return start();
}

function deactivate() {
  return client ? client.stop() : undefined;
}

module.exports = { activate, deactivate };
