"""``hxsched cluster``: several hxsched nodes behind a DICOM router (Orthanc, Lua routing)."""

from __future__ import annotations

import argparse
from pathlib import Path

from hxsched.cli._common import add_json, emit

HELP = "several hxsched nodes behind Orthanc: write the router's configuration and Lua script"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cluster", help=HELP, description=HELP + ". Each action takes --json for machines."
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    o = actions.add_parser(
        "orthanc-config",
        help="write orthanc.json and hxsched-router.lua for an Orthanc router",
        description="Write an Orthanc configuration (orthanc.json) and Lua script "
        "(hxsched-router.lua) into DIR: each incoming instance goes to a node chosen by its "
        "study (a study stays on one node), as an asynchronous store job; a job that fails "
        "with a network error is resubmitted to another node; an instance is deleted from "
        "Orthanc once a node answered Success (hxsched journals a slice before it answers); "
        "what a node sends back (by its AE title) is forwarded to the PACS the same way. "
        "Run it with: Orthanc DIR/orthanc.json",
    )
    o.add_argument(
        "--node",
        action="append",
        required=True,
        metavar="NAME=HOST:PORT[:AET]",
        help="an hxsched node's C-STORE SCP (AE title default HXSCHED); repeat per node",
    )
    o.add_argument(
        "--pacs", required=True, metavar="HOST:PORT[:AET]", help="the PACS (AE default PACS)"
    )
    o.add_argument("-o", "--output", type=Path, required=True, metavar="DIR", help="folder")
    o.add_argument("--aet", default="HXROUTER", help="the router's AE title (HXROUTER)")
    o.add_argument("--dicom-port", type=int, default=4242, help="DICOM port (4242)")
    o.add_argument("--http-port", type=int, default=8042, help="HTTP port, loopback only (8042)")
    add_json(o)
    o.set_defaults(func=run_orthanc_config)


def run_orthanc_config(args: argparse.Namespace) -> int:
    from hxsched.runtime.cluster.orthanc import (
        Cluster,
        RouterSettings,
        parse_node,
        parse_pacs,
        write_cluster,
    )

    settings = RouterSettings(aet=args.aet, dicom_port=args.dicom_port, http_port=args.http_port)
    nodes = tuple(parse_node(text) for text in args.node)
    cluster = Cluster(nodes, parse_pacs(args.pacs), settings)
    config, lua = write_cluster(cluster, args.output)
    data = {
        "config": str(config),
        "lua": str(lua),
        "nodes": [n.name for n in cluster.nodes],
        "dicom_port": settings.dicom_port,
        "http_port": settings.http_port,
    }
    emit(args, data, lambda: f"wrote {config} and {lua}\nrun: Orthanc {config}")
    return 0
