"""The Orthanc router's configuration and Lua script, built from typed records (no Orthanc
needed: the end-to-end test runs them in a real Orthanc)."""

from __future__ import annotations

import json
import re

import pytest

from hxsched.runtime.cluster.orthanc import (
    CONFIG_FILE,
    LUA_FILE,
    PACS_NAME,
    Cluster,
    ClusterError,
    Modality,
    RouterSettings,
    lua_script,
    orthanc_config,
    parse_node,
    parse_pacs,
    write_cluster,
)

A = Modality("a", "127.0.0.1", 11112, "NODEA")
B = Modality("b", "10.0.0.2", 11112, "HXSCHED")
PACS = Modality(PACS_NAME, "10.0.0.9", 104, "PACS")


def test_a_node_and_the_pacs_parse_with_their_defaults():
    assert parse_node("jet1=10.0.0.2:11112") == Modality("jet1", "10.0.0.2", 11112, "HXSCHED")
    assert parse_node("j-2=host.lan:4100:NODE2") == Modality("j-2", "host.lan", 4100, "NODE2")
    assert parse_node("v6=[::1]:11112") == Modality("v6", "::1", 11112, "HXSCHED")
    assert parse_pacs("pacs.lan:104") == Modality(PACS_NAME, "pacs.lan", 104, "PACS")
    assert parse_pacs("pacs.lan:104:MAINPACS").ae_title == "MAINPACS"


@pytest.mark.parametrize(
    "text, message",
    [
        ("10.0.0.2:11112", "NAME=HOST:PORT"),
        ("1x=h:1", "NAME=HOST:PORT"),
        ("a b=h:1", "NAME=HOST:PORT"),
        ("a=h", "HOST:PORT"),
        ("a=h:0", "not a port"),
        ("a=h:70000", "not a port"),
        ("a=h:1:" + "X" * 17, "not an AE title"),
        ("a=h:1:A\\B", "not an AE title"),
        ("a=h:1:A:B", "HOST:PORT"),
    ],
)
def test_a_malformed_node_is_one_line_naming_it(text, message):
    with pytest.raises(ClusterError, match=re.escape(message)) as err:
        parse_node(text)
    assert "\n" not in str(err.value)


def test_a_cluster_refuses_duplicates_the_pacs_name_no_nodes_and_bad_ports():
    with pytest.raises(ClusterError, match="'a' given twice"):
        Cluster((A, A), PACS)
    with pytest.raises(ClusterError, match="the PACS's name"):
        Cluster((Modality(PACS_NAME, "h", 1, "X"),), PACS)
    with pytest.raises(ClusterError, match="at least one node"):
        Cluster((), PACS)
    with pytest.raises(ClusterError, match="--http-port: 0 is not a port"):
        Cluster((A,), PACS, RouterSettings(http_port=0))
    with pytest.raises(ClusterError, match="--dicom-port: 65536"):
        Cluster((A,), PACS, RouterSettings(dicom_port=65536))
    with pytest.raises(ClusterError, match="--aet"):
        Cluster((A,), PACS, RouterSettings(aet="WAY-TOO-LONG-AE-TITLE"))


def test_the_configuration_names_the_nodes_the_pacs_and_keeps_its_data_in_the_folder(tmp_path):
    c = orthanc_config(
        Cluster((A, B), PACS, RouterSettings(dicom_port=4300, http_port=8100)), tmp_path
    )
    assert c["DicomModalities"] == {
        "a": {"AET": "NODEA", "Host": "127.0.0.1", "Port": 11112},
        "b": {"AET": "HXSCHED", "Host": "10.0.0.2", "Port": 11112},
        "pacs": {"AET": "PACS", "Host": "10.0.0.9", "Port": 104},
    }
    assert (c["DicomAet"], c["DicomPort"], c["HttpPort"]) == ("HXROUTER", 4300, 8100)
    assert c["StorageDirectory"] == str(tmp_path.resolve() / "storage")
    assert c["IndexDirectory"] == str(tmp_path.resolve() / "index")
    assert c["LuaScripts"] == [str(tmp_path.resolve() / LUA_FILE)]
    assert c["RemoteAccessAllowed"] is False and c["SaveJobs"] is True
    assert c["OverwriteInstances"] is False
    assert isinstance(c["StableAge"], int) and 0 < c["StableAge"] <= 5
    assert c["ConcurrentJobs"] == 4


def test_the_script_routes_by_study_fails_over_deletes_and_forwards_results():
    text = lua_script(Cluster((A, B), PACS, RouterSettings(max_attempts=3)))
    assert 'NODES = { "a", "b" }' in text  # the hash picks among them in this order
    assert 'NODE_AETS = { ["HXSCHED"] = true, ["NODEA"] = true }' in text
    assert 'PACS = "pacs"' in text and "MAX_ATTEMPTS = 3" in text
    for callback in ("Initialize", "OnStoredInstance", "OnJobSuccess", "OnJobFailure"):
        assert re.search(rf"^function {callback}\(", text, re.M), callback
    assert "Asynchronous = true" in text and "'/modalities/' .. target .. '/store'" in text
    assert "StudyInstanceUID" in text and "Hash(study" in text
    assert "RestApiDelete('/instances/' .. instanceId)" in text
    assert "['ErrorCode'] ~= 9" in text  # only network errors are resubmitted
    assert "RestApiGet('/instances')" in text  # Initialize re-forwards what is still stored
    # Lua's blocks balance (a cheap check without a Lua interpreter)
    code = re.sub(r"'[^']*'|\"[^\"]*\"", "''", re.sub(r"--.*$", "", text, flags=re.M))
    opens = len(re.findall(r"\b(function|if|for|while)\b", code))
    assert opens == len(re.findall(r"\bend\b", code))


def test_write_cluster_writes_json_and_lua_side_by_side(tmp_path):
    conf, lua = write_cluster(Cluster((A,), PACS), tmp_path / "router")
    assert conf == tmp_path / "router" / CONFIG_FILE and lua.name == LUA_FILE
    assert json.loads(conf.read_text())["LuaScripts"] == [str(lua.resolve())]
    assert lua.read_text().startswith("-- hxsched router")
