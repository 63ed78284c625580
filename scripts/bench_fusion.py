"""Train steps of every fusion operator: mmfuse (JAX) vs PyTorch twins, eager and compiled.

A train step is forward, MSE loss against a random target, backward and one Adam update
(``optax.adam`` / ``torch.optim.Adam``, the same defaults), on CMU-MOSI-like inputs:
text 300, audio 74 and vision 35 features fused to 128 (operators that take exactly
two modalities get text and audio). Two input shapes: one vector per example
``[B, d_m]`` (``step``) and sequences ``[B, T, d_m]`` (``seq``, the operator applied
at every time step). Every operator uses its default options.

The PyTorch twins (``benchmarks/torch_twins.py``) store their parameters in the layout
of mmfuse's functional form and are loaded with the JAX operator's initial
parameters; before any timing, each twin's output and parameter gradients are checked
against the operator's at the highest matmul precision (``hard_gated`` in training
mode with the same Gumbel noise). They run on the same device as JAX: CUDA when JAX
runs on a GPU. For timing, both sides use their fast float32 matmul mode (TF32 on
recent GPUs: JAX's default precision, ``torch.set_float32_matmul_precision("high")``)
unless ``--precision highest``. ``torch.compile`` compiles the twin (forward and,
through AOTAutograd, backward; the optimizer stays eager) with dynamic batch sizes,
once per operator and input rank; a failure to compile is recorded, not fatal.

Rows run shape by shape, every operator at one batch size before the next, in the
order ``--batches`` gives, so that a ``--budget`` drops the last batch sizes.

``--dtype bfloat16`` times mixed precision: the operator is built with
``compute_dtype=jnp.bfloat16`` (matmul operands in bf16, products accumulated and
returned in float32; biases, gates, norms, parameters, gradients and the Adam state in
float32) and each twin's forward, eager and compiled, runs under
``torch.autocast(<device>, dtype=torch.bfloat16)``, its output cast to float32 for the
loss. The bf16 operator's output and gradients, and the twin's under autocast, are
checked against the float32 operator's at the highest precision, all on the same
bf16-rounded inputs and weights (relative L2 error ≤ ``MIXED_TOLERANCE`` per output and
gradient leaf); the float32 check of the twins is the float32 run's. Its record goes
to ``fusion-bf16-<platform>.json`` by default.

Timings are the median, over ``--repeats`` samples, of the mean step time in a loop
of steps long enough to last about ``--sample-seconds``, after warm-up steps.
Without PyTorch installed only the JAX side runs.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from mmfuse import fusion

CMU_MOSI_DIMS = (300, 74, 35)  # text (GloVe), audio (COVAREP), vision (Facet)
QUICK_DIMS = (24, 12, 8)
LEARNING_RATE = 1e-3
CHECK_TOLERANCE = 1e-4  # max |difference| / max |value|, per output and gradient leaf
# bf16 vs float32 on the same (bf16-rounded) values: ‖difference‖ / ‖float32‖ per output
# and gradient leaf; measured at most 7e-3 (JAX) and 1.4e-2 (twins under autocast)
MIXED_TOLERANCE = 5e-2
DTYPES = {"float32": None, "bfloat16": jnp.bfloat16}  # --dtype -> the operator's compute_dtype
DEFAULTS = {  # step batches, sequence batches
    "quick": ([8], [4]),
    "cpu": ([32, 128], [32]),
    "accelerator": ([32, 128, 512, 1024], [32, 128]),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ops", nargs="+", default=None, help="operators (default: all)")
    parser.add_argument("--dims", type=int, nargs="+", default=None, help="text audio vision")
    parser.add_argument("--out-dim", type=int, default=None, help="default 128 (quick: 16)")
    parser.add_argument("--batches", type=int, nargs="+", default=None, help="[B, d] batches")
    parser.add_argument("--seq-batches", type=int, nargs="*", default=None, help="[B, T, d]")
    parser.add_argument("--seq-len", type=int, default=None, help="T (default 20; quick: 3)")
    parser.add_argument("--no-torch", action="store_true", help="time JAX only")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument(
        "--compile-shapes",
        nargs="*",
        choices=("step", "seq"),
        default=["step"],
        help="input shapes timed with torch.compile (each operator compiles once per shape)",
    )
    parser.add_argument(
        "--precision", choices=("fast", "highest"), default="fast", help="float32 matmuls"
    )
    parser.add_argument("--sample-seconds", type=float, default=None, help="one timing sample")
    parser.add_argument(
        "--torch-threads", type=int, default=None, help="CPU threads (default: torch's; quick: 1)"
    )
    parser.add_argument(
        "--dtype",
        choices=tuple(DTYPES),
        default="float32",
        help="bfloat16: mmfuse compute_dtype=bfloat16 vs torch.autocast(bfloat16)",
    )
    parser.add_argument("--seed", type=int, default=0)


def record_name(args: argparse.Namespace) -> str:
    """The default record's name: ``fusion``, or ``fusion-bf16`` for ``--dtype bfloat16``."""
    return "fusion-bf16" if args.dtype == "bfloat16" else "fusion"


# ----------------------------------------------------------------------------- JAX side


def build_operator(
    name: str, dims: tuple[int, ...], out_dim: int, seed: int, compute_dtype: Any = None
):
    """The operator on all three modalities, or on the first two where it takes two."""
    options = {"compute_dtype": compute_dtype}
    try:
        return fusion.create(name, dims, out_dim, rngs=nnx.Rngs(seed), **options), dims
    except ValueError:
        return fusion.create(name, dims[:2], out_dim, rngs=nnx.Rngs(seed), **options), dims[:2]


def train_step_fns(graphdef: nnx.GraphDef, stochastic: bool) -> tuple[Callable, Callable]:
    """``loss_fn(state, xs, y, key)`` (MSE) and a jitted train step
    ``step(state, opt_state, xs, y, key) -> (state, opt_state, loss)`` that donates the
    state and the optimizer state. ``key`` reaches the operator only when it samples."""
    tx = optax.adam(LEARNING_RATE)

    def loss_fn(state, xs, y, key):
        kwargs = {"key": key} if stochastic else {}
        z = nnx.merge(graphdef, state)(xs, **kwargs)  # [..., C]
        return jnp.mean((z - y) ** 2)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(state, opt_state, xs, y, key):
        loss, grads = jax.value_and_grad(loss_fn)(state, xs, y, key)
        updates, opt_state = tx.update(grads, opt_state, state)
        return optax.apply_updates(state, updates), opt_state, loss

    return loss_fn, step


@jax.jit
def _copy(tree: Any) -> Any:
    """A copy of every array of ``tree`` in one program (an eager ``jnp.copy`` per leaf
    would compile one per leaf shape)."""
    return jax.tree.map(jnp.copy, tree)


def jax_train_step(op: nnx.Module) -> tuple[Callable, Callable, Any, Any]:
    """``train_step_fns`` for ``op``, with a copy of its state (the step donates it,
    and the operator keeps its own) and the initial Adam state."""
    graphdef, state = nnx.split(op)
    state = _copy(state)
    loss_fn, step = train_step_fns(graphdef, getattr(op, "stochastic", False))
    return loss_fn, step, state, optax.adam(LEARNING_RATE).init(state)


def make_batch(dims, out_dim: int, lead: tuple[int, ...], seed: int) -> tuple[list, np.ndarray]:
    """Standard-normal inputs ``[*lead, d_m]`` and target ``[*lead, C]`` (float32 NumPy)."""
    rng = np.random.default_rng(seed)
    xs = [rng.standard_normal((*lead, d), dtype=np.float32) for d in dims]
    return xs, rng.standard_normal((*lead, out_dim), dtype=np.float32)


def time_loop(step: Callable[[], Any], sync: Callable[[Any], Any], repeats: int, target: float):
    """Median seconds per step: ``repeats`` samples of enough steps to last ``target`` s.

    Two warm-up steps (compilation, then one to time the sample length) come first.
    """
    sync(step())
    start = time.perf_counter()
    sync(step())
    inner = int(min(max(target / max(time.perf_counter() - start, 1e-9), 1), 200))
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            out = step()
        sync(out)
        samples.append((time.perf_counter() - start) / inner)
    return statistics.median(samples)


def time_jax(op, xs_np, y_np, repeats: int, target: float) -> float:
    _, step, state, opt_state = jax_train_step(op)
    xs = [jnp.asarray(x) for x in xs_np]
    y = jnp.asarray(y_np)
    key = jax.random.key(0)
    carry = [state, opt_state]

    def one_step():
        carry[0], carry[1], loss = step(carry[0], carry[1], xs, y, key)
        return loss

    return time_loop(one_step, jax.block_until_ready, repeats, target)


# ------------------------------------------------------------------------- PyTorch side


def torch_device():
    import torch

    use_cuda = jax.devices()[0].platform == "gpu" and torch.cuda.is_available()
    return torch.device("cuda" if use_cuda else "cpu")


def set_torch_precision(precision: str) -> None:
    import torch

    torch.set_float32_matmul_precision("high" if precision == "fast" else "highest")


def compiled_twin(twin):
    """``torch.compile`` of a twin with a dynamic batch size: one compile per input rank."""
    import torch

    return torch.compile(twin, dynamic=True)


def autocast(device_type: str, dtype: str):
    """``torch.autocast`` to ``dtype`` for ``bfloat16``; no context for ``float32``."""
    import torch

    if dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, dtype=getattr(torch, dtype))


def time_torch(
    twin, model, xs_np, y_np, repeats: int, target: float, dtype: str = "float32"
) -> float:
    """Median seconds per train step of ``twin`` (on the device JAX runs on) through
    ``model`` (the twin, or its ``torch.compile``); the forward under
    ``autocast(dtype)``, the loss in float32."""
    import torch

    device = torch_device()
    twin.train()
    xs = [torch.from_numpy(x).to(device) for x in xs_np]
    y = torch.from_numpy(y_np).to(device)
    opt = torch.optim.Adam(twin.parameters(), lr=LEARNING_RATE, foreach=True)

    def one_step():
        opt.zero_grad(set_to_none=True)
        with autocast(device.type, dtype):
            out = model(xs)  # [..., C], bf16 under autocast
        loss = torch.nn.functional.mse_loss(out.float(), y)
        loss.backward()
        opt.step()
        return loss

    def sync(_):
        if device.type == "cuda":
            torch.cuda.synchronize()

    return time_loop(one_step, sync, repeats, target)


def jax_output_and_grads(op, xs_np, y_np, key) -> tuple[np.ndarray, float, Any]:
    """The operator's output ``[*lead, C]``, MSE loss and parameter gradients (in the
    functional form's layout) on ``xs_np``, ``y_np``; ``key`` feeds its sampling."""
    graphdef, state = nnx.split(op)  # not donated: no copy
    stochastic = getattr(op, "stochastic", False)
    loss_fn, _ = train_step_fns(graphdef, stochastic)

    @jax.jit
    def forward_and_grads(state, xs, y, key):
        out = nnx.merge(graphdef, state)(xs, **({"key": key} if stochastic else {}))
        loss, grads = jax.value_and_grad(loss_fn)(state, xs, y, key)
        return out, loss, nnx.merge(graphdef, grads).functional_params()

    out, loss, grads = forward_and_grads(
        state, [jnp.asarray(x) for x in xs_np], jnp.asarray(y_np), key
    )
    return np.asarray(out), float(loss), jax.tree.map(np.asarray, grads)


def twin_output_and_grads(
    op, twin, xs_np, y_np, key, dtype: str = "float32"
) -> tuple[np.ndarray, float, Any]:
    """``jax_output_and_grads`` of the twin on the CPU, loaded with ``op``'s parameters,
    its forward under ``autocast(dtype)``, the loss in float32 (``hard_gated``: the
    Gumbel noise the operator draws from ``key``)."""
    import torch

    twin = twin.cpu().train()
    twin.load(op.functional_params())
    kwargs = {}
    if getattr(op, "stochastic", False):
        logits_shape = (*xs_np[0].shape[:-1], len(xs_np))
        kwargs["noise"] = torch.from_numpy(
            np.array(jax.random.gumbel(key, logits_shape, jnp.float32))
        )
    twin.zero_grad(set_to_none=True)
    with autocast("cpu", dtype):
        out = twin([torch.from_numpy(x) for x in xs_np], **kwargs)  # [*lead, C]
    out = out.float()
    loss = torch.nn.functional.mse_loss(out, torch.from_numpy(y_np))
    loss.backward()
    return out.detach().numpy(), loss.item(), twin.grads()


def check_twin(name: str, op, twin, dims, out_dim: int, lead: tuple[int, ...], seed: int) -> dict:
    """Output and gradients of the twin against the operator on the same weights."""
    import torch

    xs_np, y_np = make_batch(dims, out_dim, lead, seed)
    key = jax.random.key(seed)
    with jax.default_matmul_precision("highest"):
        out, loss, jax_grads = jax_output_and_grads(op, xs_np, y_np, key)

    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        out_t, loss_t, twin_grads = twin_output_and_grads(op, twin, xs_np, y_np, key)
    finally:
        torch.set_float32_matmul_precision(previous)

    def rel(a, b) -> float:
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        return float(np.max(np.abs(a - b)) / max(np.max(np.abs(a)), 1e-30)) if a.size else 0.0

    grad_diffs = jax.tree.map(rel, jax_grads, twin_grads)
    worst_grad = max(jax.tree.leaves(grad_diffs), default=0.0)
    output_diff = rel(out, out_t)
    return {
        "shape": list(lead),
        "output_max_relative_difference": output_diff,
        "loss_difference": abs(loss - loss_t),
        "gradient_max_relative_difference": worst_grad,
        "agree": bool(output_diff <= CHECK_TOLERANCE and worst_grad <= CHECK_TOLERANCE),
    }


def relative_l2(value, reference) -> float:
    """``‖value - reference‖ / ‖reference‖`` (0 where both are 0)."""
    value, reference = np.asarray(value, np.float64), np.asarray(reference, np.float64)
    error, norm = np.linalg.norm(value - reference), np.linalg.norm(reference)
    return float(error / norm) if norm > 0 else (0.0 if error == 0 else math.inf)


def check_mixed(
    op, reference, twin, dims, out_dim: int, lead: tuple[int, ...], seed: int, dtype: str
) -> dict:
    """Output and gradients of the low-precision operator ``op`` and, unless ``twin`` is
    None, of the twin under ``autocast(dtype)`` against the float32 operator
    ``reference`` (highest precision): relative L2 errors, the gradients' the worst over
    the parameter leaves.

    All three see the same values: the inputs and the (shared) parameters rounded to
    ``dtype`` first, so that the errors are those of the low-precision computation
    (intermediate matmul operands, backward cotangents). Rounding only the inputs of the
    low-precision side moves ReLU units across their kink, which alone changed gradient
    leaves by up to 17% (``nonlinear``, ``modality_shift``'s gates at 5 examples).
    """

    def rounded(a):  # in NumPy (ml_dtypes), without compiling a cast per array
        if not jnp.issubdtype(a.dtype, jnp.floating):
            return a
        return np.asarray(a).astype(jnp.dtype(dtype)).astype(a.dtype)

    graphdef, state = nnx.split(reference)
    state = jax.tree.map(rounded, state)
    reference, op = nnx.merge(graphdef, state), nnx.merge(nnx.graphdef(op), state)
    xs_np, y_np = make_batch(dims, out_dim, lead, seed)
    xs_np = [rounded(x) for x in xs_np]
    key = jax.random.key(seed)
    with jax.default_matmul_precision("highest"):
        out_ref, _, grads_ref = jax_output_and_grads(reference, xs_np, y_np, key)

    def errors(out, grads) -> tuple[float, float]:
        leaves = jax.tree.leaves(jax.tree.map(relative_l2, grads, grads_ref))
        return relative_l2(out, out_ref), max(leaves, default=0.0)

    out, _, grads = jax_output_and_grads(op, xs_np, y_np, key)
    check = {"shape": list(lead)}
    check["output_relative_l2"], check["gradient_relative_l2"] = errors(out, grads)
    if twin is not None:
        out_t, _, grads_t = twin_output_and_grads(reference, twin, xs_np, y_np, key, dtype)
        check["twin_output_relative_l2"], check["twin_gradient_relative_l2"] = errors(
            out_t, grads_t
        )
    check["agree"] = all(
        v <= MIXED_TOLERANCE for k, v in check.items() if k.endswith("relative_l2")
    )
    return check


# ---------------------------------------------------------------------------- the bench


def failure(error: BaseException) -> str:
    return (
        f"failed: {type(error).__name__}: {str(error).splitlines()[0][:300] if str(error) else ''}"
    )


def run(args: argparse.Namespace, timer: Callable) -> dict:
    del timer  # a train step updates its state: timed by time_loop, in a loop of steps
    # the order rows run in: the shapes as given, then every operator at each batch
    # size in the order given, so a --budget drops the last batch sizes of every operator
    platform = jax.devices()[0].platform
    kind = "quick" if args.quick else ("cpu" if platform == "cpu" else "accelerator")
    dims = tuple(args.dims or (QUICK_DIMS if args.quick else CMU_MOSI_DIMS))
    out_dim = args.out_dim or (16 if args.quick else 128)
    seq_len = args.seq_len or (3 if args.quick else 20)
    batches = args.batches or DEFAULTS[kind][0]
    seq_batches = args.seq_batches if args.seq_batches is not None else DEFAULTS[kind][1]
    target = args.sample_seconds or {"quick": 0.005, "cpu": 0.05, "accelerator": 0.02}[kind]
    names = args.ops or list(fusion.names())

    torch_info, twins_module, time_twins = None, None, False
    if not args.no_torch and importlib.util.find_spec("torch") is not None:
        try:
            import torch
            import torch_twins as twins_module
        except Exception as error:  # e.g. CUDA libraries that clash with JAX's
            torch_info = {"error": failure(error)}
        else:
            set_torch_precision(args.precision)
            threads = args.torch_threads or (1 if args.quick else None)
            if threads:
                torch.set_num_threads(threads)
            device = torch_device()
            # twins are checked on any device, timed only on the one JAX runs on
            time_twins = device.type == "cuda" or platform == "cpu"
            torch_info = {
                "torch": torch.__version__,
                "cuda": torch.version.cuda,
                "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                "threads": torch.get_num_threads(),
                "compile": not args.no_compile and not args.quick,
                "autocast": None if args.dtype == "float32" else args.dtype,
                "timed": time_twins,
            }
    compile_twins = time_twins and torch_info["compile"]

    mixed = args.dtype != "float32"
    operators, built = {}, {}
    for name in names:
        reference, op_dims = build_operator(name, dims, out_dim, args.seed)  # float32
        op = reference
        if mixed:  # the same operator with low-precision matmuls, on the same weights
            op, _ = build_operator(name, dims, out_dim, args.seed, DTYPES[args.dtype])
            nnx.update(op, nnx.state(reference, nnx.Param))
        built[name] = op, op_dims
        entry = operators[name] = {
            "in_dims": list(op_dims),
            "out_dim": out_dim,
            "parameters": sum(int(np.size(p)) for p in jax.tree.leaves(op.functional_params())),
        }
        if twins_module is not None and not mixed:  # the float32 run checks the twins
            checks = []
            for lead in ((5,), (3, 2)):  # [B, d] and [B, T, d]
                twin = twins_module.create(name, op_dims, out_dim)
                checks.append(check_twin(name, reference, twin, op_dims, out_dim, lead, args.seed))
            entry["twin_check"] = checks
            entry["twin_agrees"] = all(c["agree"] for c in checks)
        if mixed:
            checks = []
            for lead in ((5,), (3, 2)):
                twin = None if twins_module is None else twins_module.create(name, op_dims, out_dim)
                checks.append(
                    check_mixed(op, reference, twin, op_dims, out_dim, lead, args.seed, args.dtype)
                )
            entry["mixed_precision_check"] = checks
            entry["mixed_precision_agrees"] = all(c["agree"] for c in checks)
            print(format_mixed(name, checks), flush=True)

    summary = {
        "dims": {"text": dims[0], "audio": dims[1], "vision": dims[2], "out": out_dim},
        "seq_len": seq_len,
        "dtype": args.dtype,  # of the matmul operands (bfloat16: mixed precision)
        "mixed_precision_tolerance": MIXED_TOLERANCE if mixed else None,
        "matmul_precision": args.precision,
        "optimizer": f"adam(lr={LEARNING_RATE}), MSE loss",
        "pytorch": torch_info,
        "operators": operators,
        "agree": all(
            e.get("twin_agrees", True) and e.get("mixed_precision_agrees", True)
            for e in operators.values()
        ),
    }
    shapes = [("step", b, (b,)) for b in batches] + [("seq", b, (b, seq_len)) for b in seq_batches]
    results, skipped = [], []
    summary |= {"results": results, "skipped_for_time": skipped}
    jax_precision = "highest" if args.precision == "highest" else None
    twins = {}  # (operator, input rank, compiled) -> (twin on the device, what is called)
    for shape, batch, lead in shapes:
        for name in names:
            if time.monotonic() > args.deadline:
                skipped.append({"op": name, "shape": shape, "batch": batch})
                continue
            op, op_dims = built[name]  # the timed steps train copies of its parameters
            xs, y = make_batch(op_dims, out_dim, lead, args.seed + batch)
            row = {"op": name, "shape": shape, "batch": batch, "lead": list(lead)}
            with jax.default_matmul_precision(jax_precision):
                row["jax_ms"] = 1e3 * time_jax(op, xs, y, args.repeats, target)
            if time_twins:
                compiled_too = compile_twins and shape in args.compile_shapes
                variants = [("torch_eager", False)] + [("torch_compile", True)] * compiled_too
                for label, compiled in variants:
                    if compiled and time.monotonic() > args.deadline:  # a compile is long
                        skipped.append({"op": name, "shape": shape, "batch": batch, "run": label})
                        continue
                    key = (name, len(lead), compiled)
                    if key not in twins:  # one compile per operator and input rank
                        twin = twins_module.create(name, op_dims, out_dim).to(torch_device())
                        twins[key] = twin, compiled_twin(twin) if compiled else twin
                    twin, model = twins[key]
                    twin.load(op.functional_params())  # every row starts from the same weights
                    try:
                        ms = 1e3 * time_torch(twin, model, xs, y, args.repeats, target, args.dtype)
                    except Exception as error:  # a failed compile is a result
                        row[f"{label}_ms"] = failure(error)
                        continue
                    row[f"{label}_ms"] = ms
                    row[f"{label}_over_jax"] = ms / row["jax_ms"]
            results.append(row)
            print(format_row(row), flush=True)
            args.save_partial(summary)
    print_table(results)
    return summary


def _ms(value: Any) -> str:
    return f"{value:10.3f}" if isinstance(value, float) else f"{'failed':>10}"


def format_row(row: dict) -> str:
    text = f"{row['op']:16} {row['shape']:4} {row['batch']:5} | {row['jax_ms']:10.3f}"
    for label in ("torch_eager", "torch_compile"):
        if f"{label}_ms" in row:
            ratio = row.get(f"{label}_over_jax")
            text += f" | {_ms(row[f'{label}_ms'])} " + (
                f"x{ratio:6.2f}" if ratio is not None and math.isfinite(ratio) else " " * 7
            )
    return text


def format_mixed(name: str, checks: list[dict]) -> str:
    """One line of the mixed-precision check: the worst relative L2 error over the
    input shapes of the operator's and the twin's output and gradients."""
    text = f"{name:16} relative L2 error vs float32:"
    for key in ("output", "gradient", "twin_output", "twin_gradient"):
        values = [c[f"{key}_relative_l2"] for c in checks if f"{key}_relative_l2" in c]
        if values:
            text += f" | {key.replace('_', ' ')} {max(values):.2e}"
    return text + f" | {'agree' if all(c['agree'] for c in checks) else 'DISAGREE'}"


def print_table(results: list[dict]) -> None:
    print(
        f"{'operator':16} {'in':4} {'B':>5} | {'jax ms':>10} | {'eager ms':>10} {'/jax':>7} "
        f"| {'compile ms':>10} {'/jax':>7}"
    )
    for row in results:
        print(format_row(row))
