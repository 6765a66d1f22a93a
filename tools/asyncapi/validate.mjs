#!/usr/bin/env node
// Validate an AsyncAPI document with the reference parser (@asyncapi/parser).
//
//   node tools/asyncapi/validate.mjs FILE
//
// Prints every diagnostic as "<severity> <code> <path> <message>", one a line.
// Exit status: 0 when no diagnostic has error severity (then a short OK line
// with the number of channels, operations and messages goes to stdout), 1 when
// at least one has, 2 on a usage or I/O problem.
import { readFile } from 'node:fs/promises';
import { DiagnosticSeverity, Parser } from '@asyncapi/parser';

const SEVERITY = {
  [DiagnosticSeverity.Error]: 'error',
  [DiagnosticSeverity.Warning]: 'warning',
  [DiagnosticSeverity.Information]: 'info',
  [DiagnosticSeverity.Hint]: 'hint',
};

function pointer(path) {
  if (!Array.isArray(path) || path.length === 0) return '/';
  return '/' + path.map((part) => String(part).replace(/~/g, '~0').replace(/\//g, '~1')).join('/');
}

async function main(argv) {
  if (argv.length !== 1) {
    console.error('usage: node validate.mjs FILE');
    return 2;
  }
  const file = argv[0];
  let text;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    console.error(`validate: cannot read ${file}: ${error.message}`);
    return 2;
  }

  const parser = new Parser();
  const { document, diagnostics } = await parser.parse(text, { source: file });

  let errors = 0;
  for (const diagnostic of diagnostics) {
    const severity = SEVERITY[diagnostic.severity] ?? `severity-${diagnostic.severity}`;
    if (diagnostic.severity === DiagnosticSeverity.Error) errors += 1;
    console.log(`${severity} ${diagnostic.code} ${pointer(diagnostic.path)} ${diagnostic.message}`);
  }

  if (errors > 0 || document === undefined) {
    console.log(`FAILED: ${file}: ${errors} error(s), ${diagnostics.length} diagnostic(s) in all`);
    return 1;
  }
  console.log(
    `OK: ${file}: AsyncAPI ${document.version()}, ` +
      `${document.channels().length} channels, ` +
      `${document.operations().length} operations, ` +
      `${document.allMessages().length} messages, ` +
      `${diagnostics.length} diagnostic(s)`,
  );
  return 0;
}

main(process.argv.slice(2)).then(
  (status) => {
    process.exitCode = status;
  },
  (error) => {
    console.error(`validate: ${error?.stack ?? error}`);
    process.exitCode = 2;
  },
);
