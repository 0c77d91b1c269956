"""trtexec JSON readers on real recorded profiles (HaX-CoNN artifact, TensorRT 7.1.3, Xavier)."""

from __future__ import annotations

import json

import pytest
from onnx import helper
from onnx_builders import graph

from hxsched.errors import HxschedError
from hxsched.scheduler.profile.trtexec import (
    attribute,
    layer_members,
    load_export_profile,
    parse_export_profile,
    parse_layer_info,
    split_aux,
)

_INC = [
    "1x1",
    "relu_1x1",
    "3x3_reduce",
    "relu_3x3_reduce",
    "3x3",
    "relu_3x3",
    "5x5_reduce",
    "relu_5x5_reduce",
    "5x5",
    "relu_5x5",
    "pool",
    "pool_proj",
    "relu_pool_proj",
    "output",
]


def googlenet_names() -> list[str]:
    names = [
        "conv1/7x7_s2",
        "conv1/relu_7x7",
        "pool1/3x3_s2",
        "pool1/norm1",
        "conv2/3x3_reduce",
        "conv2/relu_3x3_reduce",
        "conv2/3x3",
        "conv2/relu_3x3",
        "conv2/norm2",
        "pool2/3x3_s2",
    ]
    for block in ("3a", "3b", None, "4a", "4b", "4c", "4d", "4e", None, "5a", "5b"):
        if block is None:
            names.append("pool3/3x3_s2" if "pool3/3x3_s2" not in names else "pool4/3x3_s2")
        else:
            names += [f"inception_{block}/{x}" for x in _INC]
    return [*names, "pool5/7x7_s1", "loss3/classifier", "prob"]


@pytest.fixture(scope="module")
def googlenet():
    """A stand-in graph whose nodes carry GoogleNet's Caffe layer names, in order."""
    names = googlenet_names()
    nodes, prev = [], "x"
    for i, name in enumerate(names):
        nodes.append(helper.make_node("Relu", [prev], [f"t{i}"], name=name))
        prev = f"t{i}"
    return graph(nodes, {"x": [1, 4, 4, 4]}, [prev])


def test_parse_gpu_profile(data_dir):
    p = load_export_profile(
        data_dir / "trtexec" / "haxconn_googlenet_gpu_transition_at_53.profile.json"
    )
    assert p.iterations == 11803 and len(p.rows) == 41
    assert p.rows[1].name == "conv1/7x7_s2 + conv1/relu_7x7"
    assert p.rows[1].avg_ms == pytest.approx(0.0829444)


def test_aux_rows_and_members(googlenet):
    assert split_aux("conv1/7x7_s2 + conv1/relu_7x7 input reformatter 0") == (
        "conv1/7x7_s2 + conv1/relu_7x7",
        True,
    )
    assert split_aux("data to nvm") == ("data", True)
    assert split_aux("Reformatting CopyNode for Input Tensor 0 to prob") == ("prob", True)
    assert split_aux("pool1/norm1") == ("pool1/norm1", False)
    order = {n.name: i for i, n in enumerate(googlenet.nodes)}
    names = [n.name for n in googlenet.nodes]
    members, dla = layer_members(
        "inception_3a/1x1 + inception_3a/relu_1x1 || inception_3a/3x3_reduce", order, names
    )
    assert members == ["inception_3a/1x1", "inception_3a/relu_1x1", "inception_3a/3x3_reduce"]
    assert not dla
    members, dla = layer_members("{ForeignNode[pool1/3x3_s2...conv2/3x3]}", order, names)
    assert dla and members == names[2:7]
    members, dla = layer_members("PWN(conv1/relu_7x7, pool1/3x3_s2)", order, names)
    assert members == ["conv1/relu_7x7", "pool1/3x3_s2"] and not dla


def test_attribute_gpu_profile_with_dla_block(data_dir, googlenet):
    p = load_export_profile(
        data_dir / "trtexec" / "haxconn_googlenet_gpu_transition_at_53.profile.json"
    )
    att = attribute(p, googlenet)
    assert att.unattributed_ms == 0.0
    assert len(att.dla_blocks) == 1
    members, ms = att.dla_blocks[0]
    assert members[0] == "inception_4b/1x1" and members[-1] == "loss3/classifier"
    # the DLA subgraph's time hides in its reformat rows: 1.589 ms in all
    assert ms == pytest.approx(0.0206631 + 0.00491834 + 0.00125407 + 1.55889 + 0.00328564)
    assert att.node_ms["prob"] == pytest.approx(0.00815812)
    total = sum(att.node_ms.values()) + ms
    assert total == pytest.approx(p.total_ms)


def test_attribute_whole_dla_engine(data_dir, googlenet):
    p = load_export_profile(data_dir / "trtexec" / "haxconn_googlenet_dla_mark_at_10.profile.json")
    att = attribute(p, googlenet)
    assert len(att.dla_blocks) == 1
    members, ms = att.dla_blocks[0]
    assert len(members) == len(googlenet.nodes) - 1  # all but prob
    # 'data to nvm' (before any named layer) and the 'from nvm' rows join the DLA block
    assert ms == pytest.approx(p.total_ms - 0.00532478 - 0.0066502)


@pytest.mark.parametrize(
    "data",
    [
        {"count": 3},
        [],
        [{"name": "x"}],
        [{"count": 1}, {"name": "a"}],
        [{"count": 1}, {"name": "a", "averageMs": -1}],
    ],
)
def test_bad_profile_files(data):
    with pytest.raises(HxschedError):
        parse_export_profile(data, "p.json")


def test_layer_info_both_verbosities():
    names_only = {"Layers": ["conv1", "{ForeignNode[a...b]}"], "Bindings": ["in", "out"]}
    layers = parse_layer_info(names_only)
    assert [x.dla for x in layers] == [False, True]
    detailed = {
        "Layers": [
            {"Name": "/m/Conv", "LayerType": "CaskConvolution"},
            {"Name": "{ForeignNode[/a...b]}", "LayerType": "DLA"},
        ]
    }
    layers = parse_layer_info(json.loads(json.dumps(detailed)))
    assert layers[0].layer_type == "CaskConvolution" and layers[1].dla
    with pytest.raises(HxschedError):
        parse_layer_info({"layers": []})
