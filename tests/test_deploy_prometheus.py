"""deploy/prometheus and deploy/grafana: promtool accepts them, and every metric they name is exported."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .conftest import ROOT, BrokerProcess, require_tool

PROMETHEUS = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "mshare-dashboard.json"
ALERTS = (
    "MshareBrokerDown",
    "MshareRegionsWaitingOnUnlink",
    "MshareHandoffFailures",
    "MshareSessionsReclaimed",
    "MshareRegionCapacityLow",
    "MshareArenaNearlyFull",
    "MshareRpcErrors",
    "MshareSessionErrors",
)
METRIC_NAME = re.compile(r"\bmshare_[a-z0-9_]*[a-z0-9]")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
#: Values for Grafana's variables, so the dashboard's queries parse as PromQL.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$instance": "localhost:9464", "$namespace": ".*"}
MiB = 1 << 20


def run_promtool(*args: str, cwd: Path = PROMETHEUS, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_tool("promtool", "Debian package prometheus"), *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
    )


def dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text())
    assert isinstance(data, dict)
    return data


def panels(container: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those inside (collapsed) rows."""
    for panel in container.get("panels", []):
        yield panel
        yield from panels(panel)


def queries(data: dict[str, Any]) -> list[str]:
    """The PromQL of every panel target and every query variable."""
    exprs = [str(target["expr"]) for panel in panels(data) for target in panel.get("targets", [])]
    for variable in data["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            exprs.append(str(query["query"] if isinstance(query, dict) else query))
    return exprs


def test_prometheus_config_is_valid() -> None:
    result = run_promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout + result.stderr


def test_alert_rules_are_valid() -> None:
    result = run_promtool("check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout + result.stderr


def test_alert_rules_pass_their_unit_tests() -> None:
    result = run_promtool("test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_severity_summary_description_and_a_firing_test() -> None:
    alerts = (PROMETHEUS / "alerts.yml").read_text()
    tests = (PROMETHEUS / "alerts_test.yml").read_text()
    named = re.findall(r"^\s*- alert: (\w+)$", alerts, re.MULTILINE)
    assert named == list(ALERTS)
    for block in re.split(r"^\s*- alert: ", alerts, flags=re.MULTILINE)[1:]:
        assert re.search(r"severity: (critical|warning|info)$", block, re.MULTILINE), block
        assert "summary:" in block and "description:" in block, block
    for alert in ALERTS:
        # A firing case lists the alert's labels; a quiet one has exp_alerts: [].
        cases = re.findall(rf"alertname: {alert}\n\s*exp_alerts:(.*?)(?=\n\s*- eval_time|\n\s*# --|\Z)", tests, re.DOTALL)
        assert any("exp_labels" in case for case in cases), f"{alert} never fires in alerts_test.yml"
    assert "exp_alerts: []" in tests


def test_dashboard_is_valid() -> None:
    data = dashboard()
    assert data["uid"] and data["title"]
    assert 36 <= data["schemaVersion"] <= 41
    variables = {variable["name"]: variable for variable in data["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert variables["namespace"]["type"] == "query"
    assert re.fullmatch(r"label_values\(mshare_regions(\{[^}]*\})?, namespace\)", variables["namespace"]["query"]["query"])
    ids = [panel["id"] for panel in panels(data)]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    graphs = [panel for panel in panels(data) if panel["type"] != "row"]
    assert len(graphs) >= 12
    for panel in graphs:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]) and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        targets = panel.get("targets", [])
        assert targets and all(str(target.get("expr", "")).strip() for target in targets), f"{panel['title']} has no query"
        assert all(target["datasource"] == panel["datasource"] for target in targets), panel["title"]
        refs = [target["refId"] for target in targets]
        assert len(refs) == len(set(refs)), panel["title"]
    exprs = " ".join(queries(data))
    for wanted in (
        "mshare_regions",
        "mshare_region_bytes",
        "mshare_resident_bytes",
        "mshare_attachments",
        "mshare_sessions_reclaimed_total",
        'code!="OK"',
        "histogram_quantile(0.5,",
        "histogram_quantile(0.99,",
        "mshare_rpc_duration_seconds_bucket",
        "mshare_handoffs_total",
        "mshare_pagetable_bytes_saved",
        "mshare_arena_free_bytes",
        "mshare_region_capacity",
        "mshare_process_open_fds",
    ):
        assert wanted in exprs, f"no dashboard query uses {wanted}"


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """Each query, with Grafana's variables filled in, as a recording rule promtool parses."""
    rules = []
    for i, expr in enumerate(queries(dashboard())):
        label_values = re.fullmatch(r"label_values\((.*), *\w+\)", expr)
        expr = label_values.group(1) if label_values else expr
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, expr
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    # JSON is YAML: no YAML library needed.
    (tmp_path / "dashboard_rules.yml").write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = run_promtool("check", "rules", "dashboard_rules.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def referenced_metrics() -> dict[str, set[str]]:
    """Every mshare_* name in the rules, their tests and the dashboard, with the files naming it."""
    names: dict[str, set[str]] = {}
    for path in (PROMETHEUS / "alerts.yml", PROMETHEUS / "alerts_test.yml", DASHBOARD):
        for name in METRIC_NAME.findall(path.read_text()):
            names.setdefault(name, set()).add(path.name)
    return names


def test_every_referenced_metric_is_in_a_live_scrape(broker: BrokerProcess) -> None:
    with broker.connect() as ns:
        region = ns.create("/deploy", size=2 * MiB)
        ns.stat("/deploy")
        scrape = broker.scrape()
        region.close()
    sample_names = {line.split("{")[0].split(" ")[0] for line in scrape.splitlines() if line and not line.startswith("#")}
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", scrape, re.MULTILINE))
    histograms = {name for name, kind in types.items() if kind == "histogram"}
    # The scrape really was taken with a region, an attachment, a session and a gRPC call.
    assert re.search(r'^mshare_regions\{namespace="default",state="active"\} 1\.0$', scrape, re.MULTILINE), scrape
    assert re.search(r'^mshare_attachments\{access="rw",namespace="default"\} 1\.0$', scrape, re.MULTILINE), scrape
    assert re.search(r"^mshare_sessions 1\.0$", scrape, re.MULTILINE), scrape
    assert re.search(r'^mshare_rpc_requests_total\{code="OK",method="GetEntry"\} 1\.0$', scrape, re.MULTILINE), scrape

    referenced = referenced_metrics()
    assert {"mshare_regions", "mshare_rpc_duration_seconds_bucket", "mshare_handoffs_total"} <= set(referenced)
    missing = {}
    for name, files in sorted(referenced.items()):
        family = next((name[: -len(suffix)] for suffix in HISTOGRAM_SUFFIXES if name.endswith(suffix)), name)
        if name not in sample_names and name not in histograms and family not in histograms:
            missing[name] = sorted(files)
    assert not missing, f"not in a live scrape: {missing}"

    result = run_promtool("check", "metrics", stdin=scrape)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr
