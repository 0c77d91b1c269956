"""An Orthanc router in front of several hxsched nodes: its configuration (JSON) and the Lua
script that routes each study to a node, fails over, and forwards the nodes' results."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

from hxsched.errors import HxschedError
from hxsched.files import atomic_write

# A JSON value (the configuration Orthanc reads).
Json: TypeAlias = "str | int | float | bool | None | list[Json] | dict[str, Json]"

PACS_NAME = "pacs"  # the PACS's entry in DicomModalities
CONFIG_FILE, LUA_FILE = "orthanc.json", "hxsched-router.lua"
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,31}\Z")


class ClusterError(HxschedError):
    """A malformed node, PACS or port given to ``hxsched cluster``."""


@dataclass(frozen=True)
class Modality:
    """A DICOM peer of the router: an hxsched node's SCP, or the PACS."""

    name: str
    host: str
    port: int
    ae_title: str


@dataclass(frozen=True)
class RouterSettings:
    """How the router behaves; the defaults suit a stroke service (seconds, not minutes)."""

    aet: str = "HXROUTER"
    dicom_port: int = 4242
    http_port: int = 8042
    stable_age_s: int = 1  # Orthanc's StableAge (default 60 s); routing is per instance anyway
    max_attempts: int = 6  # store attempts per instance in a row before it waits (parked)
    down_s: int = 5  # a node that failed with a network error is skipped this long
    retry_s: int = 5  # a parked instance is tried again after this long


@dataclass(frozen=True)
class Cluster:
    nodes: tuple[Modality, ...]
    pacs: Modality
    settings: RouterSettings = RouterSettings()

    def __post_init__(self) -> None:
        if not self.nodes:
            raise ClusterError("name at least one node (--node NAME=HOST:PORT[:AET])")
        names = [n.name for n in self.nodes]
        if len(set(names)) != len(names):
            dup = next(n for n in names if names.count(n) > 1)
            raise ClusterError(f"node name {dup!r} given twice")
        if PACS_NAME in names:
            raise ClusterError(f"{PACS_NAME!r} is the PACS's name: call the node otherwise")
        check_port(self.settings.dicom_port, "--dicom-port")
        check_port(self.settings.http_port, "--http-port")
        check_ae_title(self.settings.aet, "--aet")


def check_port(port: int, what: str) -> int:
    if not 1 <= port <= 65535:
        raise ClusterError(f"{what}: {port} is not a port (1..65535)")
    return port


def check_ae_title(text: str, what: str) -> str:
    """An AE title: 1-16 printable ASCII characters, no backslash (DICOM PS3.5, 6.2 AE)."""
    if not 0 < len(text) <= 16 or "\\" in text or not all(32 < ord(c) < 127 for c in text):
        raise ClusterError(f"{what}: {text!r} is not an AE title (1-16 characters, no spaces)")
    return text


def _address(text: str, what: str, default_aet: str) -> tuple[str, int, str]:
    """HOST:PORT[:AET] (an IPv6 host in brackets: [::1]:11112)."""
    m = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[^:\[\]\s]+):([0-9]{1,5})(?::([^:]+))?", text)
    if not m:
        raise ClusterError(f"{what}: expected HOST:PORT[:AET], got {text!r}")
    host, port, aet = m.group(1).strip("[]"), int(m.group(2)), m.group(3) or default_aet
    return host, check_port(port, what), check_ae_title(aet, what)


def parse_node(text: str) -> Modality:
    """``NAME=HOST:PORT[:AET]``; the AE title defaults to hxsched's SCP default, HXSCHED."""
    name, sep, rest = text.partition("=")
    if not sep or not _NAME.match(name):
        raise ClusterError(
            f"--node: expected NAME=HOST:PORT[:AET] with NAME a letter then letters, digits, "
            f"_ or - (at most 32), got {text!r}"
        )
    host, port, aet = _address(rest, f"--node {name}", "HXSCHED")
    return Modality(name, host, port, aet)


def parse_pacs(text: str) -> Modality:
    host, port, aet = _address(text, "--pacs", "PACS")
    return Modality(PACS_NAME, host, port, aet)


def orthanc_config(cluster: Cluster, directory: Path) -> dict[str, Json]:
    """The router's configuration (keys from the Orthanc Book, "Configuration of Orthanc")."""
    s, base = cluster.settings, directory.resolve()
    modalities: dict[str, Json] = {
        m.name: {"AET": m.ae_title, "Host": m.host, "Port": m.port}
        for m in (*cluster.nodes, cluster.pacs)
    }
    return {
        "Name": "hxsched-router",
        "StorageDirectory": str(base / "storage"),
        "IndexDirectory": str(base / "index"),
        "DicomAet": s.aet,
        "DicomPort": s.dicom_port,
        "HttpPort": s.http_port,
        # HTTP only from this host (Orthanc still listens on all addresses: firewall both ports)
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomModalities": modalities,
        "LuaScripts": [str(base / LUA_FILE)],
        "StableAge": s.stable_age_s,
        "SaveJobs": True,  # pending store jobs survive a restart of the router
        "JobsHistorySize": 1000,
        "ConcurrentJobs": max(2, 2 * len(cluster.nodes)),
        "OverwriteInstances": False,  # a re-sent instance is kept once (same SOP Instance UID)
        "DicomScuTimeout": 10,
        "LuaHeartBeatPeriod": s.retry_s,  # Orthanc >= 1.11.1 calls OnHeartBeat; older ignore it
        "StorageCompression": False,
    }


def _lua_string(text: str) -> str:
    return json.dumps(text)  # a JSON string of printable ASCII is a valid Lua string literal


def lua_script(cluster: Cluster) -> str:
    """The routing script: constants for this cluster, then the fixed logic (LUA_BODY)."""
    s = cluster.settings
    nodes = ", ".join(_lua_string(n.name) for n in cluster.nodes)
    aets = ", ".join(
        f"[{_lua_string(a)}] = true" for a in sorted({n.ae_title for n in cluster.nodes})
    )
    head = [
        "-- hxsched router, written by `hxsched cluster orthanc-config` (edit the command line,",
        '-- not this file). Pattern: the Orthanc Book, "Lua scripting" (auto-routing, jobs) and',
        "-- orthanc-server/orthanc-setup-samples, lua-samples/robust-forwarder.lua.",
        f"NODES = {{ {nodes} }}",
        f"NODE_AETS = {{ {aets} }}  -- calling AE titles of the nodes: what they send is a result",
        f"PACS = {_lua_string(PACS_NAME)}",
        f"MAX_ATTEMPTS = {s.max_attempts}",
        f"DOWN_SECONDS = {s.down_s}",
        f"RETRY_SECONDS = {s.retry_s}",
    ]
    return "\n".join(head) + "\n" + LUA_BODY


def study_node(study_uid: str, nodes: tuple[str, ...]) -> str:
    """The node the script sends a study to while every node is up (its Hash, in Python)."""
    h = 0
    for byte in study_uid.encode():
        h = (h * 31 + byte) % 2147483647
    return nodes[h % len(nodes)]


def write_cluster(cluster: Cluster, directory: Path) -> tuple[Path, Path]:
    """Write the configuration and the script into ``directory``; returns both paths."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ClusterError(f"{directory}: cannot create the folder ({exc.strerror})") from exc
    config = json.dumps(orthanc_config(cluster, directory), indent=2) + "\n"
    conf_path = atomic_write(directory / CONFIG_FILE, config.encode())
    lua_path = atomic_write(directory / LUA_FILE, lua_script(cluster).encode())
    return conf_path, lua_path


LUA_BODY = r"""
items = {}      -- instance -> { study = StudyInstanceUID, result = true|false }
attempts = {}   -- instance -> store attempts in a row
jobs = {}       -- job -> { instance, target }
parked = {}     -- instance -> os.time() after which it is tried again
downSince = {}  -- node -> os.time() of its last network failure

local function Hash(text)
  local h = 0
  for i = 1, #text do h = (h * 31 + string.byte(text, i)) % 2147483647 end
  return h
end

local function IsUp(node)
  local t = downSince[node]
  return t == nil or os.time() - t >= DOWN_SECONDS
end

-- The study's node: its hash picks one; a node that failed lately is skipped (the next in order
-- is taken), so a study stays on its node while that node is up.
function NodeFor(study, avoid)
  local n = #NODES
  local first = Hash(study or "") % n
  for pass = 1, 2 do
    for k = 0, n - 1 do
      local node = NODES[(first + k) % n + 1]
      if (pass == 2 or IsUp(node)) and (node ~= avoid or n == 1) then return node end
    end
  end
  return NODES[first + 1]
end

-- What an instance is: a result (sent by a node: to the PACS) or a slice (to a node).
function Describe(instanceId, study, callingAet)
  local item = items[instanceId]
  if item then return item end
  if study == nil then
    study = ParseJson(RestApiGet('/instances/' .. instanceId .. '/simplified-tags'))['StudyInstanceUID']
  end
  if callingAet == nil then
    local info = ParseJson(RestApiGet('/instances/' .. instanceId .. '/metadata?expand'))
    callingAet = info['RemoteAET']
  end
  item = { study = study, result = (callingAet ~= nil and NODE_AETS[callingAet] == true) }
  items[instanceId] = item
  return item
end

function Store(instanceId, target)
  local body = DumpJson({ Resources = { instanceId }, Asynchronous = true, Priority = 1 })
  local job = ParseJson(RestApiPost('/modalities/' .. target .. '/store', body))
  jobs[job['ID']] = { instance = instanceId, target = target }
end

-- One more store attempt, to another node than `failed` where it is a slice; after
-- MAX_ATTEMPTS in a row the instance waits RETRY_SECONDS (it stays stored meanwhile).
function Forward(instanceId, failed)
  local item = Describe(instanceId)
  local n = (attempts[instanceId] or 0) + 1
  if n > MAX_ATTEMPTS then
    attempts[instanceId] = 0
    parked[instanceId] = os.time() + RETRY_SECONDS
    print('hxsched router: an instance waits ' .. RETRY_SECONDS .. ' s: no destination took it')
    return
  end
  attempts[instanceId] = n
  if item.result then Store(instanceId, PACS) else Store(instanceId, NodeFor(item.study, failed)) end
end

function RetryParked()
  local now, due = os.time(), {}
  for instanceId, at in pairs(parked) do
    if now >= at then table.insert(due, instanceId) end
  end
  for _, instanceId in ipairs(due) do
    parked[instanceId] = nil
    Forward(instanceId, nil)
  end
end

local function Forget(instanceId)
  items[instanceId], attempts[instanceId], parked[instanceId] = nil, nil, nil
end

function Initialize()
  -- re-forward what is still stored (not yet durably on a node, or not yet in the PACS)
  for _, instanceId in ipairs(ParseJson(RestApiGet('/instances'))) do Forward(instanceId, nil) end
end

function OnStoredInstance(instanceId, tags, metadata, origin)
  local calling = nil
  if origin ~= nil then calling = origin['CallingAet'] end
  if calling == nil and metadata ~= nil then calling = metadata['RemoteAET'] end
  Describe(instanceId, tags['StudyInstanceUID'], calling or '')
  Forward(instanceId, nil)
  RetryParked()
end

-- A finished job's instance and destination: from this script's own table, else (a job saved
-- before a restart of the router) from Orthanc's job record.
local function StoreJob(jobId)
  local sent = jobs[jobId]
  jobs[jobId] = nil
  if sent ~= nil then return sent.instance, sent.target end
  local job = ParseJson(RestApiGet('/jobs/' .. jobId))
  if job['Type'] ~= 'DicomModalityStore' then return nil, nil end
  return job['Content']['ParentResources'][1], nil
end

function OnJobSuccess(jobId)
  local instanceId = StoreJob(jobId)
  if instanceId == nil then return end
  -- the destination answered Success: an hxsched node journaled the slice first (durable),
  -- a PACS stored the result; Orthanc's copy is no longer needed
  RestApiDelete('/instances/' .. instanceId)
  Forget(instanceId)
  RetryParked()
end

function OnJobFailure(jobId)
  local instanceId, target = StoreJob(jobId)
  if instanceId == nil then return end
  local job = ParseJson(RestApiGet('/jobs/' .. jobId))
  if job['ErrorCode'] ~= 9 then  -- 9: network protocol (refused, timed out, a failure status)
    print('hxsched router: a store job failed with error ' .. tostring(job['ErrorCode']) ..
          '; the instance stays stored and is re-sent at the next start')
    Forget(instanceId)
    return
  end
  if target ~= nil and target ~= PACS then downSince[target] = os.time() end
  Forward(instanceId, target)
end

function OnHeartBeat()  -- Orthanc >= 1.11.1 with LuaHeartBeatPeriod > 0
  RetryParked()
end
"""
