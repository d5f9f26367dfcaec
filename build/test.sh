#!/usr/bin/env bash
# Builds everything (Release) and runs the whole test suite; ends with one line "N passed, N failed".
# Usage: bash build/test.sh [extra dotnet test arguments, e.g. --filter FullyQualifiedName~Ring]
set -uo pipefail
cd "$(dirname "$0")/.."

bash build/install-test-deps.sh

results="artifacts/test-results"
rm -rf "$results"
mkdir -p "$results"

# Many concurrent connections in the functional suite need more than the default 1024 descriptors.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

dotnet build Kestrel.Transport.IoUring.sln -c Release -nologo -v quiet
build_status=$?
if [ $build_status -ne 0 ]; then
  echo "build failed"
  echo "0 passed, 1 failed"
  exit 1
fi

dotnet test Kestrel.Transport.IoUring.sln -c Release --no-build -nologo \
  --logger "trx" --logger "console;verbosity=normal" --results-directory "$results" "$@" \
  > "$results/console.log" 2>&1
test_status=$?
grep -E "^\s*(Failed|Skipped) |Passed!|Failed!|error" "$results/console.log" | grep -v "^\s*Passed " | tail -n 200

passed=0; failed=0; skipped=0
for trx in "$results"/*.trx; do
  [ -f "$trx" ] || continue
  # Test results only: the run's <ResultSummary outcome="Failed"> would count as one more failure.
  p=$(grep -o '<UnitTestResult [^>]*outcome="Passed"' "$trx" | wc -l)
  f=$(grep -o '<UnitTestResult [^>]*outcome="Failed"' "$trx" | wc -l)
  s=$(grep -o '<UnitTestResult [^>]*outcome="NotExecuted"' "$trx" | wc -l)
  passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
done

if [ $test_status -ne 0 ] && [ $failed -eq 0 ]; then
  # The runner failed without a failed test (a crash, or no test ran): count it as a failure.
  tail -n 40 "$results/console.log"
  failed=1
fi
if [ $((passed + failed)) -eq 0 ]; then
  echo "no test ran"
  failed=1
fi

echo "$passed passed, $failed failed, $skipped skipped"
[ $failed -eq 0 ]
