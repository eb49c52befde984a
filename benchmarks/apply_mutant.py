"""Write one of mutmut's mutants into its source file, into the right class.

    python benchmarks/apply_mutant.py MUTANT_NAME

``mutmut apply`` (3.8.1) writes a method's mutant over the first function or method of that name in
the file, whatever its class: a mutant of ``L2.project_ball`` lands in ``ThreatModel.project_ball``
(abstract, overridden, so the mutant "survives"), one of ``FGSM.__init__`` in ``PGD.__init__``. This
script takes the mutated function from mutmut's generated files as mutmut does, and replaces the
function of the mutant's own class (or the top-level function, for a function's mutant).
``benchmarks/judge_mutants.sh`` uses it. Run it from the repository root, where ``mutants/`` is.
"""
from __future__ import annotations

import sys

import libcst as cst


def replace_function(source: str, class_name: str | None, function_name: str, new_function: cst.FunctionDef) -> str:
    """``source`` with the function ``function_name`` of class ``class_name`` (a top-level function when None)
    replaced by ``new_function`` (renamed to ``function_name``); a LookupError when there is none."""
    module = cst.parse_module(source)
    target = None
    for node in module.body:
        if class_name is None and isinstance(node, cst.FunctionDef) and node.name.value == function_name:
            target = node
        elif (class_name is not None and isinstance(node, cst.ClassDef) and node.name.value == class_name
              and isinstance(node.body, cst.IndentedBlock)):
            target = next((m for m in node.body.body if isinstance(m, cst.FunctionDef) and m.name.value == function_name),
                          None)
        if target is not None:
            break
    if target is None:
        where = f"class {class_name}" if class_name else "the module's top level"
        raise LookupError(f"no function {function_name!r} in {where}")
    renamed = new_function.with_changes(name=cst.Name(function_name))
    return module.deep_replace(target, renamed).code  # type: ignore[arg-type]


def apply(mutant_name: str) -> str:
    """Write the mutant into its source file; return the file's path."""
    from mutmut.mutation.diff_apply import find_mutant, read_functions_from_index, read_mutant_function, read_mutants_module
    from mutmut.utils.format_utils import orig_function_and_class_names_from_key

    path = find_mutant(mutant_name).path
    function_name, class_name = orig_function_and_class_names_from_key(mutant_name)
    functions = read_functions_from_index(mutant_name, path)
    mutant = functions[1] if functions is not None else read_mutant_function(read_mutants_module(path), mutant_name)
    with open(path, encoding="utf-8") as fh:
        source = fh.read()
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(replace_function(source, class_name, function_name.rpartition(".")[-1], mutant))
    return str(path)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__.split("\n\n")[1].strip())
    print(apply(sys.argv[1]))
