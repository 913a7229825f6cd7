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
