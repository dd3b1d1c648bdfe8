#!/usr/bin/env bash
# npm test: typecheck, bundle, then the whole vitest suite — under a virtual X display when
# xvfb-run exists, so the gpu.js backend's conformance suite runs on a real GL context
# instead of being skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
npm run build
npx tsc --noEmit -p .
if command -v xvfb-run >/dev/null 2>&1; then
  exec xvfb-run -a npx vitest run "$@"
fi
echo "test: xvfb-run not found: gpu.js tests will be skipped (run scripts/setup.sh)" >&2
exec npx vitest run "$@"
