"""The bad-spec suite: every malformed spec in tests/bad_specs/ gives exactly these lines on
stderr (file:line:col: message), nothing on stdout, exit code 2, and never a traceback.

Each file opens with a comment saying what is wrong with it. CASES holds the full expected
stderr of `graphspec validate tests/bad_specs/NAME` run from the repo root (or of `compile`, for
the files in COMPILE, which are well-formed but too big to build).

Cases in WRONG are marked xfail(strict=True): today's output is wrong (a crash, an invalid spec
accepted, an error reported in the wrong file or naming an internal node); their expected
lines are what the output *should* be. When one is fixed the test XPASSes, which fails under
strict: remove it from WRONG then (and adjust the wording here if the fix words it differently).
"""
import glob
import os

import pytest
import yaml

from graphspec.lang import FUNCTIONS, STDLIB

HERE = os.path.dirname(os.path.abspath(__file__))
BAD = os.path.join(HERE, "bad_specs")

# The exact stderr of each file, every line in full.
CASES = [
    # ------------------------------------------------------------------ YAML level
    ("yaml_syntax.yaml", [
        "tests/bad_specs/yaml_syntax.yaml:12:3: YAML syntax: expected ',' or '}', but got '<scalar>' "
        "(while parsing a flow mapping started at line 11, column 6)",
    ]),
    ("yaml_tab_indent.yaml", [
        "tests/bad_specs/yaml_tab_indent.yaml:16:1: YAML syntax: found character '\\t' that cannot start any token",
    ]),
    ("yaml_two_documents.yaml", [
        "tests/bad_specs/yaml_two_documents.yaml:19:1: YAML syntax: expected a single document in the stream, "
        "but found another document",
    ]),
    ("yaml_duplicate_key.yaml", [
        "tests/bad_specs/yaml_duplicate_key.yaml:12:3: duplicate key 'W' (first defined at line 10); each key may appear once",
    ]),
    ("yaml_tag.yaml", [
        "tests/bad_specs/yaml_tag.yaml:2:7: the tag tag:yaml.org,2002:python/object/apply:os.system is not allowed: "
        "a spec is plain YAML (mappings, lists, strings and numbers)",
    ]),
    ("yaml_tag_on_key.yaml", [
        "tests/bad_specs/yaml_tag_on_key.yaml:14:3: the tag tag:yaml.org,2002:python/name:os.system is not allowed: "
        "a spec is plain YAML (mappings, lists, strings and numbers)",
    ]),
    ("yaml_merge_key.yaml", [
        "tests/bad_specs/yaml_merge_key.yaml:6:5: YAML merge keys (<<) are not supported; write the keys out",
    ]),
    ("yaml_deep.yaml", [
        "tests/bad_specs/yaml_deep.yaml:5:39: nesting deeper than 32 levels; a spec is shallower than that",
    ]),
    ("yaml_alias_bomb.yaml", [
        "tests/bad_specs/yaml_alias_bomb.yaml:3:34: the document expands to more than 100000 values (alias expansion?); refusing it",
    ]),
    ("yaml_not_mapping.yaml", [
        "tests/bad_specs/yaml_not_mapping.yaml:2:1: a spec is a YAML mapping with at least name and nodes",
    ]),
    ("yaml_empty.yaml", [
        "tests/bad_specs/yaml_empty.yaml:1:1: a spec is a YAML mapping with at least name and nodes",
    ]),
    ("yaml_not_utf8.yaml", [
        "tests/bad_specs/yaml_not_utf8.yaml:1:1: not UTF-8 text (byte 102)",
    ]),
    ("yaml_flow_unclosed.yaml", [
        "tests/bad_specs/yaml_flow_unclosed.yaml:11:25: 'uniform(-0.1, 0.1' does not close its brackets (inside {...} "
        "a comma would end a plain value: quote it if the comma belongs to it)",
    ]),
    # ------------------------------------------------------------------ structural (JSON Schema)
    ("schema_missing_nodes.yaml", [
        "tests/bad_specs/schema_missing_nodes.yaml:2:1: (top level): 'nodes' is a required property",
    ]),
    ("schema_missing_name.yaml", [
        "tests/bad_specs/schema_missing_name.yaml:2:1: (top level): 'name' is a required property",
    ]),
    ("schema_nodes_empty.yaml", [
        "tests/bad_specs/schema_nodes_empty.yaml:14:8: nodes: {} should be non-empty",
    ]),
    ("schema_unknown_top_key.yaml", [
        "tests/bad_specs/schema_unknown_top_key.yaml:14:1: unknown key 'nodez' in (top level); did you mean 'nodes'? "
        "(allowed: name, doc, data, dims, blocks, inputs, params, nodes, loss, outputs, train, decode)",
    ]),
    ("schema_unknown_param_key.yaml", [
        "tests/bad_specs/schema_unknown_param_key.yaml:11:7: unknown key 'shap' in params/b; did you mean 'shape'? "
        "(allowed: shape, init, learn)",
    ]),
    ("schema_unknown_input_key.yaml", [
        "tests/bad_specs/schema_unknown_input_key.yaml:5:18: unknown key 'axsi' in inputs/x; did you mean 'axis'? "
        "(allowed: tokens, real, label, axis, target, width, from)",
    ]),
    ("schema_node_unknown_key.yaml", [
        "tests/bad_specs/schema_node_unknown_key.yaml:16:20: unknown key 'int' in nodes/h; did you mean 'init'? "
        "(allowed: eq, init, axis)",
    ]),
    ("schema_shape_not_list.yaml", [
        "tests/bad_specs/schema_shape_not_list.yaml:11:14: params/b/shape: 'H' is not of type 'array'",
    ]),
    ("schema_shape_entry_float.yaml", [
        "tests/bad_specs/schema_shape_entry_float.yaml:11:15: params/b/shape/0: 1.5 is not valid under any of the given schemas",
    ]),
    ("schema_batch_string.yaml", [
        "tests/bad_specs/schema_batch_string.yaml:19:16: train/batch: 'many' is not of type 'integer'",
    ]),
    ("schema_name_not_string.yaml", [
        "tests/bad_specs/schema_name_not_string.yaml:2:7: name: ['elman'] is not of type 'string'",
    ]),
    ("schema_bad_optimizer.yaml", [
        "tests/bad_specs/schema_bad_optimizer.yaml:19:20: train/optimizer: 'adma' is not one of sgd, momentum, adam; "
        "did you mean 'adam'?",
    ]),
    ("schema_bad_param_name.yaml", [
        "tests/bad_specs/schema_bad_param_name.yaml:8:3: params: '2b' is not a valid name (letters, digits, _)",
    ]),
    ("schema_input_two_kinds.yaml", [
        "tests/bad_specs/schema_input_two_kinds.yaml:5:6: inputs/x: an input needs exactly one of tokens, real or label",
    ]),
    ("schema_input_no_kind.yaml", [
        "tests/bad_specs/schema_input_no_kind.yaml:5:6: inputs/x: an input needs exactly one of tokens, real or label",
    ]),
    ("schema_input_not_mapping.yaml", [
        "tests/bad_specs/schema_input_not_mapping.yaml:5:6: inputs/x: 'tokens' is not of type 'object'",
    ]),
    ("schema_several.yaml", [
        "tests/bad_specs/schema_several.yaml:3:1: unknown key 'nodez' in (top level); did you mean 'nodes'? "
        "(allowed: name, doc, data, dims, blocks, inputs, params, nodes, loss, outputs, train, decode)",
        "tests/bad_specs/schema_several.yaml:12:7: unknown key 'shap' in params/b; did you mean 'shape'? "
        "(allowed: shape, init, learn)",
        "tests/bad_specs/schema_several.yaml:20:13: train/lr: -1 is less than or equal to the minimum of 0",
    ]),
    # ------------------------------------------------------------------ semantic: names
    ("undefined_name.yaml", [
        "tests/bad_specs/undefined_name.yaml:15:14: unknown name 'hh'; did you mean 'h'?",
    ]),
    ("bad_node_name.yaml", [
        "tests/bad_specs/bad_node_name.yaml:17:3: 'o-1' is not a valid node name",
        "tests/bad_specs/bad_node_name.yaml:18:21: unknown name 'o'",
    ]),
    ("duplicate_name.yaml", [
        "tests/bad_specs/duplicate_name.yaml:16:3: duplicate name 'W': already defined as a param",
    ]),
    ("duplicate_input_param.yaml", [
        "tests/bad_specs/duplicate_input_param.yaml:14:3: duplicate name 'x': already defined as an input",
    ]),
    ("duplicate_dim_param.yaml", [
        "tests/bad_specs/duplicate_dim_param.yaml:14:3: duplicate name 'H': already defined as a dim",
    ]),
    ("duplicate_node_dim.yaml", [
        "tests/bad_specs/duplicate_node_dim.yaml:17:3: duplicate name 'D': already defined as a dim",
    ]),
    ("unknown_function.yaml", [
        "tests/bad_specs/unknown_function.yaml:16:6: unknown function 'tnah'; did you mean 'tanh'?",
    ]),
    ("unknown_function_far.yaml", [
        "tests/bad_specs/unknown_function_far.yaml:17:6: unknown function 'mish' (functions: "
        + ", ".join(FUNCTIONS) + "; blocks: " + ", ".join(sorted(
            yaml.safe_load(open(os.path.join(STDLIB, f)))["block"] for f in os.listdir(STDLIB))) + ")",
    ]),
    ("node_called_like_a_function.yaml", [
        "tests/bad_specs/node_called_like_a_function.yaml:16:14: 'h' is a node, not a function: a step is read "
        "with brackets, h[t-1]",
    ]),
    ("output_unknown_function.yaml", [
        "tests/bad_specs/output_unknown_function.yaml:20:9: unknown function 'argmx'; did you mean 'argmax'?",
    ]),
    ("unknown_block.yaml", [
        "tests/bad_specs/unknown_block.yaml:15:6: unknown function 'lstmm'; did you mean 'lstm'?",
    ]),
    ("unknown_initializer.yaml", [
        "tests/bad_specs/unknown_initializer.yaml:9:28: unknown initializer 'xavire'; did you mean 'xavier'? "
        "(known: constant, glorot, identity, normal, ones, orthogonal, uniform, xavier, zeros)",
    ]),
    ("initializer_bracket.yaml", [
        "tests/bad_specs/initializer_bracket.yaml:8:29: unknown initializer 'normal[0.1]'; did you mean 'normal'? "
        "(known: constant, glorot, identity, normal, ones, orthogonal, uniform, xavier, zeros)",
    ]),
    ("initializer_arity.yaml", [
        "tests/bad_specs/initializer_arity.yaml:11:25: initializer uniform takes 2 argument(s), got 1",
    ]),
    ("unknown_dim.yaml", [
        "tests/bad_specs/unknown_dim.yaml:11:15: unknown dim 'HH'; did you mean 'H'?",
    ]),
    ("dim_not_positive.yaml", [
        "tests/bad_specs/dim_not_positive.yaml:3:18: dim 'D' must be a positive integer or 'data', got 0",
    ]),
    ("dim_not_integer.yaml", [
        "tests/bad_specs/dim_not_integer.yaml:3:18: dim 'D' must be a positive integer or 'data', got 8.5",
    ]),
    # ------------------------------------------------------------------ semantic: equations
    ("eq_syntax.yaml", [
        "tests/bad_specs/eq_syntax.yaml:16:14: cannot parse equation 'tanh(a +)': invalid syntax",
    ]),
    ("eq_power.yaml", [
        "tests/bad_specs/eq_power.yaml:16:6: unsupported syntax in an equation: **; use + - * / @, calls and name[t-k]",
    ]),
    ("eq_too_deep.yaml", [
        "tests/bad_specs/eq_too_deep.yaml:16:6: equation nested too deeply; split it into several nodes",
    ]),
    ("eq_float_delay.yaml", [
        "tests/bad_specs/eq_float_delay.yaml:15:14: h[t-1.5]: a time index is t-k or t+k with a whole number k",
    ]),
    ("function_arity.yaml", [
        "tests/bad_specs/function_arity.yaml:16:6: tanh takes 1 argument, got 2",
    ]),
    ("function_unknown_kwarg.yaml", [
        "tests/bad_specs/function_unknown_kwarg.yaml:16:26: leaky_relu has no argument 'alpha' (leaky_relu(z, a=0.01))",
    ]),
    ("division_by_node.yaml", [
        "tests/bad_specs/division_by_node.yaml:15:6: division only by a non-zero number (x / 2); write x * y for products",
    ]),
    ("split_wrong_count.yaml", [
        "tests/bad_specs/split_wrong_count.yaml:16:12: split must name as many parts as there are targets: split(x, 3)",
    ]),
    ("split_indivisible.yaml", [
        "tests/bad_specs/split_indivisible.yaml:17:12: split: size 16 of 'a' does not divide into 3 parts",
    ]),
    ("several_names_not_split.yaml", [
        "tests/bad_specs/several_names_not_split.yaml:16:9: several names (h, g) need split(x, 2) on the right",
    ]),
    ("slice_out_of_range.yaml", [
        "tests/bad_specs/slice_out_of_range.yaml:17:6: slice [10:20] is out of range for f[16] (in node 's')",
    ]),
    ("per_example_adam.yaml", [
        "tests/bad_specs/per_example_adam.yaml:12:20: per_example updates are plain SGD's (word2vec's online "
        "updates); use optimizer: sgd, not adam"]),
    ("per_example_clip.yaml", [
        "tests/bad_specs/per_example_clip.yaml:12:50: per_example updates take no clip: each example's SGD step "
        "is lr times its own gradient; remove clip",
        "tests/bad_specs/per_example_clip.yaml:12:69: per_example updates take no weight_decay: each example's SGD "
        "step is lr times its own gradient; remove weight_decay"]),
    ("per_example_unknown_rule.yaml", [
        "tests/bad_specs/per_example_unknown_rule.yaml:12:38: train/per_example: 'word2vek' is not one of true, "
        "false, word2vec; did you mean 'word2vec'?"]),
    ("per_example_word2vec_not_the_form.yaml", [
        "tests/bad_specs/per_example_word2vec_not_the_form.yaml:13:38: per_example: word2vec is word2vec's update "
        "rule, for the word2vec form only: v = E[ids] or embed_mean(E, ids) over inputs without an axis, loss "
        "negsample_head(v, y, V) or hsoftmax_head(v, y, V); use per_example: true"]),
    ("slice_negative_start.yaml", [
        "tests/bad_specs/slice_negative_start.yaml:17:23: slice [-4:4] is out of range for f[16] (in node 'o')",
    ]),
    ("dropout_p_out_of_range.yaml", [
        "tests/bad_specs/dropout_p_out_of_range.yaml:17:27: dropout: p must be in [0, 1), got 1.5",
    ]),
    # ------------------------------------------------------------------ semantic: shapes and kinds
    ("shape_matmul.yaml", [
        "tests/bad_specs/shape_matmul.yaml:15:23: matmul: cannot multiply [16, 16] by f[8]: "
        "the matrix takes 16 inputs, the vector has 8 (in node 'a')",
    ]),
    ("shape_add.yaml", [
        "tests/bad_specs/shape_add.yaml:17:6: add: shapes f[20] and f[16] do not match (in node 'o')",
    ]),
    ("matmul_vector_left.yaml", [
        "tests/bad_specs/matmul_vector_left.yaml:15:10: matmul: the left operand must be a matrix param (W @ x), "
        "got f[16] (in node 'a')",
    ]),
    ("tokens_into_matmul.yaml", [
        "tests/bad_specs/tokens_into_matmul.yaml:15:23: matmul: operand 'x' holds token ids but real values are needed "
        "here (look up an embedding first: E[x])",
    ]),
    ("argmax_into_loss.yaml", [
        "tests/bad_specs/argmax_into_loss.yaml:18:7: cross_entropy: operand 'argmax(o)' holds token ids but real "
        "values are needed here",
    ]),
    ("loss_not_a_loss_value.yaml", [
        "tests/bad_specs/loss_not_a_loss_value.yaml:18:7: 'o' is not a loss: write a loss op (cross_entropy, "
        "hsoftmax, mse, negsample), a sum of them, or a list of them (loss: [mse(h, y), mse(o, y)])",
    ]),
    ("loss_not_a_loss_scaled.yaml", [
        "tests/bad_specs/loss_not_a_loss_scaled.yaml:18:7: '0.5 * cross_entropy(o, y)' is not a loss: write a loss "
        "op (cross_entropy, hsoftmax, mse, negsample), a sum of them, or a list of them (loss: [mse(h, y), mse(o, y)])",
    ]),
    ("loss_classes_mismatch.yaml", [
        "tests/bad_specs/loss_classes_mismatch.yaml:18:7: cross_entropy: logits f[16] do not match the 20 classes "
        "of 'y' (V=20)",
    ]),
    ("init_shape_mismatch.yaml", [
        "tests/bad_specs/init_shape_mismatch.yaml:16:26: init of 'h': c is f[20] but h is f[16]",
    ]),
    # ------------------------------------------------------------------ semantic: time
    ("delay_on_param.yaml", [
        "tests/bad_specs/delay_on_param.yaml:15:6: b[t-1]: 'b' is a param with no time axis; "
        "only nodes that vary over t can be read at t-k",
    ]),
    ("delay_on_static.yaml", [
        "tests/bad_specs/delay_on_static.yaml:11:6: s[t-1]: 's' is a static node with no time axis; "
        "only nodes that vary over t can be read at t-k",
    ]),
    ("const_node_delayed.yaml", [
        "tests/bad_specs/const_node_delayed.yaml:18:6: k[t-1]: 'k' is a static node with no time axis; "
        "only nodes that vary over t can be read at t-k",
    ]),
    ("cycle_two.yaml", [
        "tests/bad_specs/cycle_two.yaml:15:6: cycle with no delay: a -> h -> a; "
        "one of these reads must be from an earlier step, e.g. h[t-1]",
    ]),
    ("cycle_three.yaml", [
        "tests/bad_specs/cycle_three.yaml:15:6: cycle with no delay: a -> h -> g -> a; "
        "one of these reads must be from an earlier step, e.g. g[t-1]",
    ]),
    ("cycle_self.yaml", [
        "tests/bad_specs/cycle_self.yaml:15:6: cycle with no delay: a -> a; "
        "one of these reads must be from an earlier step, e.g. a[t-1]",
    ]),
    ("cycle_unsized.yaml", [
        "tests/bad_specs/cycle_unsized.yaml:17:6: cycle with no delay: f -> g -> f; "
        "one of these reads must be from an earlier step, e.g. g[t-1]",
    ]),
    ("mixed_axes.yaml", [
        "tests/bad_specs/mixed_axes.yaml:12:11: node 'd' mixes steps of axes src and tgt; "
        "read across axes with last(x) or all(x)",
    ]),
    ("last_of_static.yaml", [
        "tests/bad_specs/last_of_static.yaml:10:6: last(s): 's' has no time axis to read across",
    ]),
    ("last_of_delayed.yaml", [
        "tests/bad_specs/last_of_delayed.yaml:13:29: last() takes a node name, e.g. last(enc)",
    ]),
    ("teacher_forced_not_target.yaml", [
        "tests/bad_specs/teacher_forced_not_target.yaml:15:24: teacher_forced: 'x' must be a target input "
        "(declare it with target: true)",
    ]),
    ("teacher_forced_bad_free.yaml", [
        "tests/bad_specs/teacher_forced_bad_free.yaml:15:35: teacher_forced: free must be 'argmax' or 'sample'",
    ]),
    ("teacher_forced_unknown_kwarg.yaml", [
        "tests/bad_specs/teacher_forced_unknown_kwarg.yaml:12:34: teacher_forced has no argument 'fre'; "
        "did you mean 'free'?",
    ]),
    ("teacher_forced_sampling_range.yaml", [
        "tests/bad_specs/teacher_forced_sampling_range.yaml:12:39: teacher_forced: sampling must be a probability "
        "between 0 and 1, got 1.5",
    ]),
    # ------------------------------------------------------------------ semantic: blocks
    ("block_too_many_args.yaml", [
        "tests/bad_specs/block_too_many_args.yaml:15:6: block rnn takes at most 3 arguments (x, H, h0), got 4",
    ]),
    ("block_missing_arg.yaml", [
        "tests/bad_specs/block_missing_arg.yaml:15:6: block rnn needs dim 'H' (x, H, h0)",
    ]),
    ("block_unknown_kwarg.yaml", [
        "tests/bad_specs/block_unknown_kwarg.yaml:15:23: block rnn has no argument 'hh0'; did you mean 'h0'?",
    ]),
    ("block_arg_twice.yaml", [
        "tests/bad_specs/block_arg_twice.yaml:12:21: block rnn: argument 'H' given twice",
    ]),
    ("block_bad_option.yaml", [
        "tests/bad_specs/block_bad_option.yaml:15:25: gru: reset must be one of after, before, got 'middle'",
    ]),
    ("block_option_not_string.yaml", [
        "tests/bad_specs/block_option_not_string.yaml:12:25: gru: reset must be one of after, before, got 1",
    ]),
    ("block_option_misspelt.yaml", [
        "tests/bad_specs/block_option_misspelt.yaml:12:24: block gru has no argument 'rest'; did you mean 'reset'?",
    ]),
    ("block_dim_not_size.yaml", [
        "tests/bad_specs/block_dim_not_size.yaml:12:16: expected a size, got 'c'",
    ]),
    ("block_dim_zero.yaml", [
        "tests/bad_specs/block_dim_zero.yaml:12:16: block rnn: dim 'H' must be a positive integer, got 0",
    ]),
    ("block_dim_float.yaml", [
        "tests/bad_specs/block_dim_float.yaml:12:16: block rnn: dim 'H' must be a positive integer, got 2.5",
    ]),
    ("stack_layers_float.yaml", [
        "tests/bad_specs/stack_layers_float.yaml:12:6: stack: layers must be a whole number of at least 1, got 1.5",
    ]),
    ("block_tokens_into_rnn.yaml", [
        "tests/bad_specs/block_tokens_into_rnn.yaml:12:10: rnn: argument 'x' holds token ids but real values are "
        "needed here (look up an embedding first: E[x])",
    ]),
    ("block_h0_shape.yaml", [
        "tests/bad_specs/block_h0_shape.yaml:13:31: rnn: h0 last(enc) is f[16] but the state h is f[32] (in node 'dec')",
    ]),
    ("attention_without_all.yaml", [
        "tests/bad_specs/attention_without_all.yaml:14:8: node 'ctx' mixes steps of axes src and tgt; "
        "read across axes with last(x) or all(x)",
    ]),
    ("delay_both_directions.yaml", [
        "tests/bad_specs/delay_both_directions.yaml:16:27: h[t-1] and h[t+1] in one recurrence (a, h): a loop runs "
        "one way, reading earlier steps or later ones; compute the other direction in nodes of its own "
        "(as bidirectional(...) does)",
    ]),
    # ------------------------------------------------------------------ semantic: loss, target, data
    ("no_loss.yaml", [
        "tests/bad_specs/no_loss.yaml:12:1: the spec has learnable params but no loss: add one, e.g. "
        "loss: cross_entropy(o, y) (tokens or labels) or loss: mse(o, y) (real values)",
    ]),
    ("target_unknown_metric.yaml", [
        "tests/bad_specs/target_unknown_metric.yaml:22:81: unknown key 'perplexity' in train/target "
        "(allowed: loss, ppl, acc, seq_acc, mse, neighbours, free_acc, free_seq_acc)",
    ]),
    ("target_metric_not_reported.yaml", [
        "tests/bad_specs/target_metric_not_reported.yaml:22:81: target mse: this spec's loss (cross_entropy) "
        "reports loss, ppl, acc, seq_acc",
    ]),
    ("data_unknown_task.yaml", [
        "tests/bad_specs/data_unknown_task.yaml:3:14: unknown task 'charml'; did you mean 'charlm'? (tasks: adding, "
        "addition, bits, charlm, copy, copy_memory, dates, neighbours, parity, reverse, sort, words)",
    ]),
    ("data_unknown_task_param.yaml", [
        "tests/bad_specs/data_unknown_task_param.yaml:3:22: task charlm has no parameter 'lenght'; did you mean "
        "'length'? (parameters: length, min_count)",
    ]),
    # ------------------------------------------------------------------ user block files
    ("block_file_missing.yaml", [
        "tests/bad_specs/block_file_missing.yaml:3:10: block file 'blocks/nope.yaml' not found "
        "(looked for tests/bad_specs/blocks/nope.yaml)",
    ]),
    ("block_file_is_directory.yaml", [
        "tests/bad_specs/block_file_is_directory.yaml:3:10: block file 'blocks' is a directory "
        "(tests/bad_specs/blocks), not a block file",
    ]),
    ("block_file_malformed.yaml", [
        "tests/bad_specs/blocks/bad_block.yaml:5:1: unknown key 'nodez' in (top level); did you mean 'nodes'? "
        "(allowed: block, doc, option, args, dims, params, nodes, out)",
    ]),
    ("block_file_yaml_error.yaml", [
        "tests/bad_specs/blocks/syntax_error.yaml:4:5: YAML syntax: expected ',' or ']', but got ':' "
        "(while parsing a flow sequence started at line 3, column 7)",
    ]),
    ("block_file_bad_out.yaml", [
        "tests/bad_specs/blocks/bad_out.yaml:10:6: block cell: out 'g' is not one of its nodes",
    ]),
    ("block_file_builtin_name.yaml", [
        "tests/bad_specs/blocks/named_tanh.yaml:2:8: block name 'tanh' is a built-in function; choose another",
    ]),
    ("block_file_bad_equation.yaml", [
        "tests/bad_specs/blocks/bad_equation.yaml:9:6: unknown function 'tnah'; did you mean 'tanh'?",
    ]),
    # ------------------------------------------------------------------ too big to build (compile)
    ("memory_absurd.yaml", [
        "tests/bad_specs/memory_absurd.yaml:3:7: these dims (V=20, D=8, H=10000000) with batch 32 and lengths t=10 "
        "need at least 745060.2 GiB for values and gradients; the limit is 8 GiB: use smaller dims, a smaller "
        "batch or a shorter length",
    ]),
    ("delay_huge.yaml", [
        "tests/bad_specs/delay_huge.yaml:15:14: a delay of 100000000 steps (h[t-100000000]) needs 381.5 GiB for "
        "values and gradients; the limit is 8 GiB: read fewer steps back",
    ]),
]

# Well-formed specs that validate passes and compile refuses.
COMPILE = {"memory_absurd.yaml", "delay_huge.yaml"}

# Today's output is wrong; CASES holds what it should be. file -> what happens today.
WRONG: dict = {}


def _params():
    out = []
    for name, expected in CASES:
        marks = [pytest.mark.xfail(strict=True, reason=WRONG[name])] if name in WRONG else []
        out.append(pytest.param(name, expected, id=name, marks=marks))
    return out


@pytest.mark.parametrize("name, expected", _params())
def test_bad_spec_reports_exactly(cli, name, expected):
    verb = "compile" if name in COMPILE else "validate"
    r = cli(verb, f"tests/bad_specs/{name}")
    assert "Traceback" not in r.stderr
    assert r.stdout == ""
    assert r.stderr.splitlines() == expected
    assert r.returncode == 2


def test_every_bad_spec_file_has_its_expected_output():
    files = sorted(os.path.basename(p) for p in glob.glob(os.path.join(BAD, "*.yaml")))
    names = [c[0] for c in CASES]
    assert len(names) == len(set(names)), "a file is listed twice in CASES"
    assert files == sorted(names)
    assert set(WRONG) <= set(names) and COMPILE <= set(names)
    assert len(files) >= 45


def test_every_bad_spec_says_what_is_wrong_on_its_first_line():
    for p in glob.glob(os.path.join(BAD, "*.yaml")) + glob.glob(os.path.join(BAD, "blocks", "*.yaml")):
        with open(p, "rb") as f:
            first = f.readline()
        assert first.startswith(b"# ") and len(first.strip()) > 5, p


@pytest.mark.parametrize("name", sorted(COMPILE))
def test_too_big_to_build_still_validates(cli, name):
    """The memory limit is the compiler's: validate passes, compile refuses (CASES)."""
    r = cli("validate", f"tests/bad_specs/{name}")
    assert r.returncode == 0 and r.stderr == ""
    assert r.stdout.startswith(f"tests/bad_specs/{name}: OK (")


def test_compile_reports_the_same_errors_as_validate(cli):
    expected = dict(CASES)
    for name in ("cycle_two.yaml", "schema_unknown_top_key.yaml", "no_loss.yaml"):
        r = cli("compile", f"tests/bad_specs/{name}")
        assert (r.returncode, r.stdout) == (2, "")
        assert r.stderr.splitlines() == expected[name]


def test_oversize_file_is_refused_before_parsing(cli, tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("# a spec padded past 1 MiB\nname: big\nnodes:\n  h: x\n# " + "x" * (1 << 20) + "\n")
    size = big.stat().st_size
    r = cli("validate", big)
    assert r.returncode == 2 and r.stdout == "" and "Traceback" not in r.stderr
    assert r.stderr.splitlines() == [
        f"{big}:1:1: the file is {size} bytes, larger than 1048576; a spec should be a page of YAML"]


def test_alias_bomb_generated_deeper_is_refused_quickly(cli, tmp_path):
    """Nine levels of ten: 10**9 values if expanded; refused after 100,000."""
    lines = ["# a billion laughs", "name: bomb", "l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 10):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]")
    lines += ["nodes:", "  h: x"]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    r = cli("validate", bomb, timeout=60)
    assert r.returncode == 2 and r.stdout == "" and "Traceback" not in r.stderr
    assert r.stderr.splitlines() == [
        f"{bomb}:3:34: the document expands to more than 100000 values (alias expansion?); refusing it"]


def test_missing_file(cli):
    r = cli("validate", "tests/bad_specs/no_such_spec.yaml")
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr.splitlines() == ["tests/bad_specs/no_such_spec.yaml:1:1: no such file"]


def test_directory_instead_of_a_spec(cli):
    r = cli("validate", "tests/bad_specs/blocks")
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr.splitlines() == ["tests/bad_specs/blocks:1:1: a directory, not a spec file"]


def test_several_files_at_once(cli):
    """Each bad file's errors, the good file's OK line, exit 2: one bad file does not stop the rest."""
    expected = dict(CASES)
    r = cli("validate", "tests/bad_specs/undefined_name.yaml", "specs/elman.yaml",
            "tests/bad_specs/schema_several.yaml")
    assert r.returncode == 2
    out = r.stdout.splitlines()
    assert len(out) == 1 and out[0].startswith("specs/elman.yaml: OK (")
    assert r.stderr.splitlines() == expected["undefined_name.yaml"] + expected["schema_several.yaml"]


def test_a_call_with_commas_inside_flow_mappings_and_lists_reads_as_written(cli, tmp_path):
    """{init: uniform(0, 1)} as the docs write it: YAML alone splits it at the comma (init
    'uniform(0' and a key '1)'); the loader joins the pieces back from the file's text."""
    from graphspec.loader import load_text
    doc = load_text("name: m\nparams: {U: {shape: [H, D], init: uniform(-0.1,  0.1)}}\n"
                    "loss: [cross_entropy(o, y, norm=1), mse(f(a, g(b, c)), y)]\n"
                    "outputs: {p: leaky_relu(o, a=0.1), q: \"x\"}\nnodes: {h: x}\n")
    assert doc.data["params"]["U"] == {"shape": ["H", "D"], "init": "uniform(-0.1,  0.1)"}
    assert doc.data["loss"] == ["cross_entropy(o, y, norm=1)", "mse(f(a, g(b, c)), y)"]
    assert doc.data["outputs"] == {"p": "leaky_relu(o, a=0.1)", "q": "x"}
    assert str(doc.where(("loss", 1))) == "<string>:3:37"
    spec = tmp_path / "flow.yaml"
    spec.write_text(open(os.path.join(BAD, "yaml_flow_unclosed.yaml")).read().replace("0.1}", "0.1)}"))
    r = cli("render", spec)
    assert r.returncode == 0 and "    init: uniform(-0.1, 0.1)\n" in r.stdout
