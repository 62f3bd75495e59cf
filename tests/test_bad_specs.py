"""The bad-spec suite: every malformed spec in tests/bad_specs/ gives exactly these lines on
stderr (file:line:col: message), nothing on stdout, exit code 2, and never a traceback."""
import glob
import os

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))

# (file, verb, the exact stderr lines)
CASES = [
    ('block_bad_option.yaml', 'validate', [
        "tests/bad_specs/block_bad_option.yaml:15:25: gru: reset must be one of after, before, got 'middle'",
    ]),
    ('block_file_malformed.yaml', 'validate', [
        "tests/bad_specs/blocks/bad_block.yaml:4:1: unknown key 'nodez' in (top level); did you mean 'nodes'? (allowed: block, doc, option, args, dims, params, nodes, out)",
    ]),
    ('block_file_missing.yaml', 'validate', [
        "tests/bad_specs/block_file_missing.yaml:3:10: block file 'blocks/nope.yaml' not found (looked for tests/bad_specs/blocks/nope.yaml)",
    ]),
    ('block_missing_arg.yaml', 'validate', [
        "tests/bad_specs/block_missing_arg.yaml:15:6: block rnn needs dim 'H' (x, H, h0)",
    ]),
    ('block_too_many_args.yaml', 'validate', [
        'tests/bad_specs/block_too_many_args.yaml:15:6: block rnn takes at most 3 arguments (x, H, h0), got 4',
    ]),
    ('block_unknown_kwarg.yaml', 'validate', [
        "tests/bad_specs/block_unknown_kwarg.yaml:15:23: block rnn has no argument 'hh0'; did you mean 'h0'?",
    ]),
    ('cycle_three.yaml', 'validate', [
        'tests/bad_specs/cycle_three.yaml:15:6: cycle with no delay: a -> h -> g -> a; one of these reads must be from an earlier step, e.g. g[t-1]',
    ]),
    ('cycle_two.yaml', 'validate', [
        'tests/bad_specs/cycle_two.yaml:15:6: cycle with no delay: a -> h -> a; one of these reads must be from an earlier step, e.g. h[t-1]',
    ]),
    ('delay_on_param.yaml', 'validate', [
        "tests/bad_specs/delay_on_param.yaml:15:6: b[t-1]: 'b' is a param with no time axis; only nodes that vary over t can be read at t-k",
    ]),
    ('delay_on_static.yaml', 'validate', [
        "tests/bad_specs/delay_on_static.yaml:11:6: s[t-1]: 's' is a static node with no time axis; only nodes that vary over t can be read at t-k",
    ]),
    ('dim_not_integer.yaml', 'validate', [
        "tests/bad_specs/dim_not_integer.yaml:3:18: dim 'D' must be a positive integer or 'data', got 8.5",
    ]),
    ('dim_not_positive.yaml', 'validate', [
        "tests/bad_specs/dim_not_positive.yaml:3:18: dim 'D' must be a positive integer or 'data', got 0",
    ]),
    ('division_by_node.yaml', 'validate', [
        'tests/bad_specs/division_by_node.yaml:15:6: division only by a non-zero number (x / 2); write x * y for products',
    ]),
    ('duplicate_name.yaml', 'validate', [
        "tests/bad_specs/duplicate_name.yaml:16:3: duplicate name 'W': already defined as a param",
    ]),
    ('initializer_arity.yaml', 'validate', [
        'tests/bad_specs/initializer_arity.yaml:11:25: initializer uniform takes 2 argument(s), got 1',
    ]),
    ('last_of_static.yaml', 'validate', [
        "tests/bad_specs/last_of_static.yaml:10:6: last(s): 's' has no time axis to read across",
    ]),
    ('matmul_vector_left.yaml', 'validate', [
        "tests/bad_specs/matmul_vector_left.yaml:15:10: matmul: the left operand must be a matrix param (W @ x), got f[16] (in node 'a')",
    ]),
    ('memory_absurd.yaml', 'compile', [
        'tests/bad_specs/memory_absurd.yaml:3:7: these dims (V=20, D=8, H=1000000) with batch 32 and lengths t=10 need 7463.0 GiB for values and gradients; the limit is 8 GiB: use smaller dims or a shorter length',
    ]),
    ('mixed_axes.yaml', 'validate', [
        "tests/bad_specs/mixed_axes.yaml:12:11: node 'd' mixes steps of axes src and tgt; read across axes with last(x) or all(x)",
    ]),
    ('schema_bad_optimizer.yaml', 'validate', [
        "tests/bad_specs/schema_bad_optimizer.yaml:19:20: train/optimizer: 'adma' is not one of sgd, momentum, adam; did you mean 'adam'?",
    ]),
    ('schema_bad_param_name.yaml', 'validate', [
        "tests/bad_specs/schema_bad_param_name.yaml:8:3: params: '2b' is not a valid name (letters, digits, _)",
    ]),
    ('schema_batch_string.yaml', 'validate', [
        "tests/bad_specs/schema_batch_string.yaml:19:16: train/batch: 'many' is not of type 'integer'",
    ]),
    ('schema_input_no_kind.yaml', 'validate', [
        'tests/bad_specs/schema_input_no_kind.yaml:5:6: inputs/x: an input needs exactly one of tokens, real or label',
    ]),
    ('schema_input_two_kinds.yaml', 'validate', [
        'tests/bad_specs/schema_input_two_kinds.yaml:5:6: inputs/x: an input needs exactly one of tokens, real or label',
    ]),
    ('schema_missing_name.yaml', 'validate', [
        "tests/bad_specs/schema_missing_name.yaml:2:1: (top level): 'name' is a required property",
    ]),
    ('schema_missing_nodes.yaml', 'validate', [
        "tests/bad_specs/schema_missing_nodes.yaml:2:1: (top level): 'nodes' is a required property",
    ]),
    ('schema_several.yaml', 'validate', [
        "tests/bad_specs/schema_several.yaml:3:1: unknown key 'nodez' in (top level); did you mean 'nodes'? (allowed: name, doc, data, dims, blocks, inputs, params, nodes, loss, outputs, train, decode)",
        "tests/bad_specs/schema_several.yaml:12:7: unknown key 'shap' in params/b; did you mean 'shape'? (allowed: shape, init, learn)",
        'tests/bad_specs/schema_several.yaml:20:13: train/lr: -1 is less than or equal to the minimum of 0',
    ]),
    ('schema_shape_not_list.yaml', 'validate', [
        "tests/bad_specs/schema_shape_not_list.yaml:11:14: params/b/shape: 'H' is not of type 'array'",
    ]),
    ('schema_unknown_param_key.yaml', 'validate', [
        "tests/bad_specs/schema_unknown_param_key.yaml:11:7: unknown key 'shap' in params/b; did you mean 'shape'? (allowed: shape, init, learn)",
    ]),
    ('schema_unknown_top_key.yaml', 'validate', [
        "tests/bad_specs/schema_unknown_top_key.yaml:14:1: unknown key 'nodez' in (top level); did you mean 'nodes'? (allowed: name, doc, data, dims, blocks, inputs, params, nodes, loss, outputs, train, decode)",
    ]),
    ('shape_add.yaml', 'validate', [
        "tests/bad_specs/shape_add.yaml:17:6: add: shapes f[20] and f[16] do not match (in node 'o')",
    ]),
    ('shape_matmul.yaml', 'validate', [
        "tests/bad_specs/shape_matmul.yaml:15:23: matmul: cannot multiply [16, 16] by f[8]: the matrix takes 16 inputs, the vector has 8 (in node 'a')",
    ]),
    ('split_wrong_count.yaml', 'validate', [
        'tests/bad_specs/split_wrong_count.yaml:16:12: split must name as many parts as there are targets: split(x, 3)',
    ]),
    ('teacher_forced_bad_free.yaml', 'validate', [
        "tests/bad_specs/teacher_forced_bad_free.yaml:15:35: teacher_forced: free must be 'argmax' or 'sample'",
    ]),
    ('teacher_forced_not_target.yaml', 'validate', [
        "tests/bad_specs/teacher_forced_not_target.yaml:15:24: teacher_forced: 'x' must be a target input (declare it with target: true)",
    ]),
    ('tokens_into_matmul.yaml', 'validate', [
        "tests/bad_specs/tokens_into_matmul.yaml:15:23: matmul: operand 'x' holds token ids but real values are needed here (look up an embedding first: E[x])",
    ]),
    ('undefined_name.yaml', 'validate', [
        "tests/bad_specs/undefined_name.yaml:15:14: unknown name 'hh'; did you mean 'h'?",
    ]),
    ('unknown_block.yaml', 'validate', [
        "tests/bad_specs/unknown_block.yaml:15:6: unknown function 'lstmm'; did you mean 'lstm'?",
    ]),
    ('unknown_dim.yaml', 'validate', [
        "tests/bad_specs/unknown_dim.yaml:11:15: unknown dim 'HH'; did you mean 'H'?",
    ]),
    ('unknown_function.yaml', 'validate', [
        "tests/bad_specs/unknown_function.yaml:16:6: unknown function 'tnah'; did you mean 'tanh'?",
    ]),
    ('unknown_initializer.yaml', 'validate', [
        "tests/bad_specs/unknown_initializer.yaml:9:28: unknown initializer 'xavire'; did you mean 'xavier'? (known: constant, glorot, identity, normal, ones, orthogonal, uniform, xavier, zeros)",
    ]),
    ('yaml_alias_bomb.yaml', 'validate', [
        'tests/bad_specs/yaml_alias_bomb.yaml:3:34: the document expands to more than 100000 values (alias expansion?); refusing it',
    ]),
    ('yaml_deep.yaml', 'validate', [
        'tests/bad_specs/yaml_deep.yaml:5:39: nesting deeper than 32 levels; a spec is shallower than that',
    ]),
    ('yaml_duplicate_key.yaml', 'validate', [
        "tests/bad_specs/yaml_duplicate_key.yaml:12:3: duplicate key 'W' (first defined at line 10); each key may appear once",
    ]),
    ('yaml_merge_key.yaml', 'validate', [
        'tests/bad_specs/yaml_merge_key.yaml:6:5: YAML merge keys (<<) are not supported; write the keys out',
    ]),
    ('yaml_not_mapping.yaml', 'validate', [
        'tests/bad_specs/yaml_not_mapping.yaml:2:1: a spec is a YAML mapping with at least name and nodes',
    ]),
    ('yaml_syntax.yaml', 'validate', [
        "tests/bad_specs/yaml_syntax.yaml:12:3: YAML syntax: expected ',' or '}', but got '<scalar>'",
    ]),
    ('yaml_tag.yaml', 'validate', [
        'tests/bad_specs/yaml_tag.yaml:2:7: the tag tag:yaml.org,2002:python/object/apply:os.system is not allowed: a spec is plain YAML (mappings, lists, strings and numbers)',
    ]),
]


@pytest.mark.parametrize("name, verb, expected", CASES, ids=[c[0] for c in CASES])
def test_bad_spec_reports_exactly(cli, name, verb, expected):
    r = cli(verb, f"tests/bad_specs/{name}")
    assert r.returncode == 2
    assert r.stdout == ""
    assert "Traceback" not in r.stderr
    assert r.stderr.splitlines() == expected


def test_every_bad_spec_file_has_its_expected_output():
    files = sorted(os.path.basename(p) for p in glob.glob(os.path.join(HERE, "bad_specs", "*.yaml")))
    assert files == sorted(c[0] for c in CASES)
    assert len(files) >= 40


def test_oversize_file_is_refused_before_parsing(cli, tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("name: big\nnodes:\n  h: x\n# " + "x" * (1 << 20) + "\n")
    r = cli("validate", big)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    size = big.stat().st_size
    assert r.stderr.splitlines() == [f"{big}:1:1: the file is {size} bytes, larger than 1048576; a spec should be a page of YAML"]


def test_memory_estimate_passes_validation_but_compile_refuses(cli):
    r = cli("validate", "tests/bad_specs/memory_absurd.yaml")
    assert r.returncode == 0 and r.stdout.startswith("tests/bad_specs/memory_absurd.yaml: OK")


def test_several_files_at_once(cli):
    r = cli("validate", "tests/bad_specs/undefined_name.yaml", "specs/elman.yaml", "tests/bad_specs/cycle_two.yaml")
    assert r.returncode == 2
    assert r.stdout.splitlines() == ["specs/elman.yaml: OK (10 step nodes, 6 params, axes: t)"]
    assert r.stderr.splitlines() == [
        "tests/bad_specs/undefined_name.yaml:15:14: unknown name 'hh'; did you mean 'h'?",
        "tests/bad_specs/cycle_two.yaml:15:6: cycle with no delay: a -> h -> a; one of these reads must be "
        "from an earlier step, e.g. h[t-1]",
    ]
