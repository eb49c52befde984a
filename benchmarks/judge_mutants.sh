#!/usr/bin/env bash
# Judge mutmut's mutants one at a time against chosen test files (faster than `mutmut run NAME...`,
# which runs every test that executed the mutated function):
#
#   benchmarks/judge_mutants.sh "PYTEST ARGS" MUTANT_NAME...
#
# For each name: benchmarks/apply_mutant.py writes the mutant into the source file (into its own class:
# `mutmut apply` 3.8.1 writes a method's mutant over the first method of that name in the file, whatever
# its class), pytest runs with -x, the file is restored. Prints KILLED (a test failed or timed out),
# SURVIVED or ERROR(code) per mutant. A package's mutants (pkg.x_f__mutmut_1) go into pkg/__init__.py. Run it in a copy of the repository at the commit whose sources `make mutation` mutated
# (mutants/ must match the sources), one run at a time: two at once would mutate each other's files.
# Example: benchmarks/judge_mutants.sh "tests/test_fab.py" 'benchmark.attacks.fab.xǁFABǁrun__mutmut_108'
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD
python=${PYTHON:-.venv/bin/python}
spec=$1; shift
for name in "$@"; do
  module=$(echo "${name%%.x*}" | tr . /)
  # a module is module.py or, for a package, module/__init__.py
  if [ -f "$module.py" ]; then file=$module.py; elif [ -f "$module/__init__.py" ]; then file=$module/__init__.py
  else echo "NO-SOURCE $name"; continue; fi
  backup=$(mktemp)
  cp "$file" "$backup"
  if ! written=$("$python" benchmarks/apply_mutant.py "$name" 2>/dev/null); then
    # mutmut finds mutants through setup.cfg's only_mutate: a module not named there is not found
    cp "$backup" "$file"; rm "$backup"; echo "APPLY-FAILED $name"; continue
  fi
  if [ -n "$written" ] && [ "$(realpath "$written")" != "$(realpath "$file")" ]; then
    # the mutant went into another file than the one backed up: put both back and stop
    cp "$backup" "$file"; git checkout -- "$written" 2>/dev/null
    echo "WRONG-FILE $name ($written, expected $file)"; exit 3
  fi
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
