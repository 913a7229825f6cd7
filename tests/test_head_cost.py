"""MAC counts against closed forms, and the head cost table."""

import keras
import pytest
from conftest import CNN_PAIRS, small_cnn

from keras_vid import VIDDistiller, VIDHead
from keras_vid.flops import head_macs, layer_macs, model_macs
from keras_vid.head_cost import head_cost_summary


def macs_of(layer, input_shape):
    return layer_macs(layer, input_shape, layer.compute_output_shape(input_shape))


@pytest.mark.parametrize(
    "layer, input_shape, expected",
    [
        (keras.layers.Conv2D(8, 3, padding="same"), (None, 4, 4, 3), 4 * 4 * 3 * 3 * 3 * 8),
        (keras.layers.Conv2D(4, 3, strides=2), (None, 5, 5, 2), 2 * 2 * 3 * 3 * 2 * 4),
        (keras.layers.Conv2D(8, 3, padding="same", groups=2), (None, 4, 4, 4), 16 * 9 * 2 * 8),
        (keras.layers.Conv1D(6, 2), (None, 5, 3), 4 * 2 * 3 * 6),
        (keras.layers.DepthwiseConv2D(3, padding="same"), (None, 4, 4, 5), 16 * 9 * 5),
        (
            keras.layers.SeparableConv2D(6, 3, padding="same"),
            (None, 4, 4, 5),
            16 * 9 * 5 + 16 * 5 * 6,
        ),
        (keras.layers.Conv2DTranspose(4, 2, strides=2), (None, 3, 3, 2), 3 * 3 * 2 * 2 * 2 * 4),
        (keras.layers.Dense(7), (None, 5), 5 * 7),
        (keras.layers.Dense(7), (None, 6, 5), 6 * 5 * 7),
        (keras.layers.BatchNormalization(), (None, 4, 4, 3), 0),
        (keras.layers.AdaptiveAveragePooling2D((2, 2)), (None, 4, 4, 3), 0),
    ],
)
def test_layer_macs_closed_forms(layer, input_shape, expected):
    assert macs_of(layer, input_shape) == expected


def test_layer_macs_needs_known_sizes():
    with pytest.raises(ValueError, match=r"layer 'c'.*unknown dimensions"):
        macs_of(keras.layers.Conv2D(2, 1, name="c"), (None, None, None, 3))


# small_cnn(width=4, 5 classes) on 8×8×3: conv1 8·8·(3·3·3)·4, conv2 4·4·(3·3·4)·8, dense 8·5.
SMALL_CNN_4 = 8 * 8 * 27 * 4 + 4 * 4 * 36 * 8 + 8 * 5


def test_model_macs_small_cnn():
    assert model_macs(small_cnn("s", 4)) == SMALL_CNN_4 == 11560


def test_model_macs_counts_nested_models_and_each_call():
    inputs = keras.Input((8, 8, 3))
    body = small_cnn("body", 4)
    conv = keras.layers.Conv2D(3, 1, name="shared")
    x = conv(conv(inputs))  # two calls of one layer: 2 · 64 · 3 · 3
    outputs = body(x)
    model = keras.Model(inputs, outputs)
    assert model_macs(model) == SMALL_CNN_4 + 2 * 64 * 9


@pytest.mark.parametrize(
    "student_shape, teacher_shape, expected",
    [
        # three 1×1 convolutions 4→8→8→8 on 8×8
        ((None, 8, 8, 4), (None, 8, 8, 8), 64 * (4 * 8 + 8 * 8 + 8 * 8)),
        # student map pooled to the teacher's 4×4 first (pooling counts 0)
        ((None, 8, 8, 4), (None, 4, 4, 8), 16 * (4 * 8 + 8 * 8 + 8 * 8)),
        # VID-LP: one Dense layer 8 → 5
        ((None, 8), (None, 5), 8 * 5),
        # vector → map: Dense 8 → 4·4·8, then a reshape
        ((None, 8), (None, 4, 4, 8), 8 * 128),
        # map → vector: global pooling (0) then Dense 4 → 5
        ((None, 8, 8, 4), (None, 5), 4 * 5),
    ],
)
def test_head_macs_closed_forms(student_shape, teacher_shape, expected):
    head = VIDHead()
    head.build(student_shape, teacher_shape)
    assert head_macs(head) == expected


def test_head_cost_summary_rows_and_flags():
    keras.utils.set_random_seed(0)
    teacher, student = small_cnn("t", 8), small_cnn("s", 4)
    pairs = CNN_PAIRS + [("s_pool", "t_g1")]  # a vector regressed onto an 8×8×8 map
    distiller = VIDDistiller(teacher, student, pairs=pairs)
    printed = []
    summary = head_cost_summary(distiller, print_fn=printed.append)
    assert summary.student_params == student.count_params() == 489
    assert summary.student_macs == SMALL_CNN_4
    assert [h.macs for h in summary.heads] == [
        64 * (4 * 8 + 8 * 8 + 8 * 8),
        16 * (8 * 16 + 16 * 16 + 16 * 16),
        8 * 5,
        8 * 512,
    ]
    # Head 3: Dense 8 → 512 with bias, plus α per teacher channel.
    assert summary.heads[3].params == 8 * 512 + 512 + 8
    assert [h.params for h in summary.heads] == [h.count_params() for h in distiller.heads]
    # Head 1 (three 1×1 convolutions 8→16→16→16, 640 weights + 16 α) outweighs
    # the 489-parameter student; head 3 both outweighs and out-computes it.
    assert [h.params for h in summary.heads[:3]] == [160 + 8, 640 + 16, 45 + 5]
    assert [h.bigger_than_student for h in summary.heads] == [False, True, False, True]
    assert summary.oversized == [summary.heads[1], summary.heads[3]]
    assert summary.total_macs == sum(h.macs for h in summary.heads)
    (table,) = printed
    assert table == str(summary)
    assert "s_pool" in table and "t_g1" in table and "> student" in table
    assert "2 head(s) cost more than the student" in table
    assert f"{SMALL_CNN_4:,}" in table


def test_einsum_dense_and_attention_closed_forms():
    einsum = keras.layers.EinsumDense("abc,cd->abd", output_shape=(None, 12))
    einsum.build((None, 7, 5))
    assert layer_macs(einsum, (None, 7, 5), (None, 7, 12)) == 7 * 5 * 12
    ellipsis = keras.layers.EinsumDense("...b,bc->...c", output_shape=4)
    ellipsis.build((None, 3, 6))
    assert layer_macs(ellipsis, (None, 3, 6), (None, 3, 4)) == 3 * 6 * 4
    # Cross-attention: 5 queries of width 8 over 9 values of width 6, 2 heads.
    attention = keras.layers.MultiHeadAttention(2, key_dim=3, value_dim=4)
    q, v = keras.Input((5, 8)), keras.Input((9, 6))
    out = attention(q, v)
    projections = 5 * 8 * 2 * 3 + 9 * 6 * 2 * (3 + 4) + 5 * 2 * 4 * 8
    products = 5 * 9 * 2 * (3 + 4)
    assert layer_macs(attention, q.shape, out.shape, v.shape) == projections + products


def test_custom_layers_with_weights_are_listed_and_heads_compared_by_params():
    from keras_vid.flops import uncounted_layers

    class Block(keras.layers.Layer):
        def build(self, shape):
            self.w = self.add_weight(shape=(shape[-1], shape[-1]))
            self.gates = self.add_weight(shape=(shape[-1], 64))  # params, not in the head

        def call(self, x):
            return keras.ops.matmul(x, self.w) + keras.ops.mean(self.gates)

    def model(name):
        i = keras.Input((6, 16))
        h = Block(name=f"{name}_block")(keras.layers.LayerNormalization()(i))
        pooled = keras.layers.GlobalAveragePooling1D()(h)
        return keras.Model(i, keras.layers.Dense(3)(pooled), name=name)

    student = model("s")
    assert uncounted_layers(student) == ["s_block"]
    distiller = VIDDistiller(model("t"), student, pairs=[("s_block", "t_block")])
    summary = head_cost_summary(distiller, print_fn=None)
    assert summary.uncounted == ["s_block"]
    assert "leave out 1 layer(s) of unknown cost (s_block)" in str(summary)
    # The head's MACs exceed the (incomplete) student count, its params do not.
    assert summary.heads[0].macs > summary.student_macs
    assert summary.heads[0].params < summary.student_params
    assert not summary.oversized
