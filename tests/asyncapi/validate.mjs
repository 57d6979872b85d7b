// Parses and validates an AsyncAPI document with the official parser; prints one
// JSON line per diagnostic, then {"valid": bool, "operations": n}. Run by
// tests/unit/test_asyncapi.py from .cache/asyncapi (where `make asyncapi` installs it).
import { Parser } from '@asyncapi/parser';
import { readFileSync } from 'node:fs';

const text = readFileSync(process.argv[process.argv.length - 1], 'utf8');
const { document, diagnostics } = await new Parser().parse(text);
for (const d of diagnostics) {
  console.log(JSON.stringify({ severity: d.severity, code: d.code, message: d.message, path: d.path }));
}
console.log(JSON.stringify({ valid: document !== undefined, operations: document ? document.operations().length : 0 }));
