"""avdetect.cpu_compile: the XLA:CPU options each kind of program compiles with are
accepted by this jaxlib, do what they are there for (convolutions on XLA's own kernels,
YNNPACK kept for the train step's reductions), and change no value."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from avdetect import cpu_compile

pytestmark = pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU options")


def _conv_bn_stats(x, w):
    """A conv followed by BatchNorm-style batch statistics (mean and E[x^2])."""
    y = jax.lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y, jnp.mean(y, (0, 1, 2)), jnp.mean(jnp.square(y), (0, 1, 2))


def _ynn_fused_ops(compiled) -> set[str]:
    """The HLO opcodes inside the program's YNNPACK fusions."""
    text = compiled.as_text()
    bodies = {m.group(1) for m in re.finditer(
        r"fusion\([^)]*\), kind=kCustom, calls=%([\w.\-]+)[^\n]*__ynn_fusion", text)}
    ops = set()
    for name in bodies:
        body = text.split(f"%{name} ", 1)[1].split("\n}\n", 1)[0]
        ops |= set(re.findall(r"= \S+ (convolution|dot|reduce|multiply|add)\(", body))
    return ops


@pytest.fixture(scope="module")
def operands():
    rng = np.random.default_rng(0)
    # channels as in the trunk's later stages (XLA leaves convolutions of a few channels
    # on its own kernels whatever the options)
    x = jnp.asarray(rng.normal(size=(4, 14, 14, 32)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 3, 32, 32)), jnp.float32)
    return x, w


def test_every_program_kind_compiles_and_gives_the_default_compile_values(operands):
    ref = jax.jit(_conv_bn_stats)(*operands)
    for options in (cpu_compile.train_step(), cpu_compile.train_step(fast=True),
                    cpu_compile.inference(), cpu_compile.inference(fast=True),
                    cpu_compile.run_once()):
        out = jax.jit(_conv_bn_stats, compiler_options=options)(*operands)
        for a, b in zip(out, ref):
            np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5 * float(jnp.abs(b).max()))


def test_convolutions_leave_ynnpack_and_only_the_train_step_keeps_its_reductions(operands):
    default = _ynn_fused_ops(jax.jit(_conv_bn_stats).lower(*operands).compile())
    assert "convolution" in default       # what the options change: JAX's default
    train = _ynn_fused_ops(jax.jit(_conv_bn_stats, compiler_options=cpu_compile.train_step())
                           .lower(*operands).compile())
    infer = _ynn_fused_ops(jax.jit(_conv_bn_stats, compiler_options=cpu_compile.inference())
                           .lower(*operands).compile())
    assert "convolution" not in train and "convolution" not in infer
    assert "reduce" in train and "reduce" not in infer

