#!/usr/bin/env bash
# Judge mutmut's mutants one at a time against chosen test files (faster than `mutmut run NAME...`,
# which runs every test that executed the mutated function):
#
#   benchmarks/judge_mutants.sh "PYTEST ARGS" MUTANT_NAME...
#
# For each name: benchmarks/apply_mutant.py writes the mutant into the source file (into its own class:
# `mutmut apply` 3.8.1 writes a method's mutant over the first method of that name in the file, whatever
# its class), pytest runs with -x, the file is restored. Prints KILLED (a test failed or timed out),
# SURVIVED or ERROR(code) per mutant. Run it in a copy of the repository at the commit whose sources `make mutation` mutated
# (mutants/ must match the sources), one run at a time: two at once would mutate each other's files.
# Example: benchmarks/judge_mutants.sh "tests/test_fab.py" 'benchmark.attacks.fab.xǁFABǁrun__mutmut_108'
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD
python=${PYTHON:-.venv/bin/python}
spec=$1; shift
for name in "$@"; do
  module=${name%%.x*}
  file=$(echo "$module" | tr . /).py
  backup=$(mktemp)
  cp "$file" "$backup"
  "$python" benchmarks/apply_mutant.py "$name" >/dev/null 2>&1
  if cmp -s "$file" "$backup"; then echo "NOT-APPLIED $name"; rm "$backup"; continue; fi
  # shellcheck disable=SC2086 # the pytest arguments are meant to split
  timeout 300 "$python" -m pytest -q -x -p no:cacheprovider $spec >/dev/null 2>&1
  code=$?
  case $code in
    0) echo "SURVIVED $name";;
    1|124|137) echo "KILLED $name";;
    *) echo "ERROR($code) $name";;
  esac
  cp "$backup" "$file"; rm "$backup"
done
