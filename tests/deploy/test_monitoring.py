"""deploy/monitoring/: the alert rules pass promtool and fire when they should, the dashboard is well formed
and its queries parse, and every metric either names is served by a live receiver's GET /metrics."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from tests.servers import RedisServer

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "deploy" / "monitoring"
ALERTS = MONITORING / "alerts.yaml"
DASHBOARD = MONITORING / "grafana-dashboard.json"
METRIC = re.compile(r"\bveo_archiver_[a-z0-9_]+\b")
# Grafana's interval variables, replaced by a fixed range so promtool can parse the dashboard's queries
GRAFANA_RANGES = re.compile(r"\$__(rate_interval|interval|range)|\$\{__(rate_interval|interval|range)\}")
KIE_CALLBACK = {
    "code": 200,
    "msg": "ok",
    "data": {"taskId": "t1", "info": {"resultUrls": ["https://example.com/v.mp4"]}},
}
#: what the dashboard must show (the issue's list); each name must appear in some panel's expr
DASHBOARD_METRICS = {
    "veo_archiver_queue_depth",
    "veo_archiver_oldest_queued_job_age_seconds",
    "veo_archiver_workers_alive",
    "veo_archiver_redis_up",
    "veo_archiver_callbacks_accepted_total",
    "veo_archiver_callbacks_duplicate_total",
    "veo_archiver_callbacks_recorded_total",
    "veo_archiver_callbacks_rejected_total",
    "veo_archiver_dead_letters",
    "veo_archiver_job_outcomes_total",
    "veo_archiver_url_time_left_seconds_bucket",
    "veo_archiver_archived_bytes_total",
    "veo_archiver_job_duration_seconds_bucket",
    "veo_archiver_enqueue_seconds_bucket",
    "veo_archiver_tracked_tasks_pending",
}


# ------------------------------------------------------------------------------------------- helpers


def promtool() -> str:
    """The promtool binary; fails under CI (CI set) when missing, skips elsewhere."""
    path = shutil.which("promtool")
    if path is None:
        reason = "promtool is not installed (Debian: apt-get install prometheus)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must install it")
        pytest.skip(reason)
    return path


def run_promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *map(str, args)], capture_output=True, text=True, timeout=120)


def load_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    (group,) = doc["groups"]
    assert group["name"] == "veo-archiver"
    rules: list[dict[str, Any]] = group["rules"]
    return rules


def load_dashboard() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, also those nested in collapsed rows."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in panels(load_dashboard()) if p.get("type") != "row" for t in p.get("targets", [])]


def rule_exprs() -> list[str]:
    return [str(rule["expr"]) for rule in load_rules()]


# ------------------------------------------------------------------------------------------- alert rules


def test_promtool_check_rules_passes() -> None:
    result = run_promtool("check", "rules", ALERTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(load_rules())} rules found" in result.stdout


def test_every_alert_says_how_bad_it_is_and_what_to_do() -> None:
    rules = load_rules()
    names = [rule["alert"] for rule in rules]
    assert len(set(names)) == len(names), names
    for rule in rules:
        name = rule["alert"]
        assert "for" in rule, name
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        summary, description = rule["annotations"]["summary"], rule["annotations"]["description"]
        assert summary.strip() and description.strip(), name
        assert re.search(r"`veo-archiver [a-z-]+", description) or "/readyz" in description, (
            f"{name}: the description should name the command to run"
        )
    described = " ".join(rule["annotations"]["description"] for rule in rules)
    for command in ("veo-archiver status", "veo-archiver failed", "veo-archiver retry --reason R"):
        assert command in described


def _series(name: str, values: str, **labels: str) -> dict[str, str]:
    inner = ", ".join(f'{k}="{v}"' for k, v in sorted({"instance": "r1", "job": "veo-archiver", **labels}.items()))
    return {"series": f"{name}{{{inner}}}", "values": values}


def _firing(alertname: str, at: str, *labels: dict[str, str]) -> dict[str, Any]:
    return {"eval_time": at, "alertname": alertname, "exp_alerts": [{"exp_labels": dict(lbl)} for lbl in labels]}


R1 = {"instance": "r1", "job": "veo-archiver"}
Q = {"queue": "veo-archiver"}

# (what, input series, expectations): evaluated by `promtool test rules` once a minute
ALERT_CASES: list[tuple[str, list[dict[str, str]], list[dict[str, Any]]]] = [
    (
        "redis down for 2 minutes",
        [_series("veo_archiver_redis_up", "1 1 0x10")],
        [
            _firing("VeoArchiverRedisDown", "3m"),  # down since 2m: pending
            _firing("VeoArchiverRedisDown", "4m", {**R1, "severity": "critical"}),
        ],
    ),
    (
        "no worker for 5 minutes",
        [_series("veo_archiver_workers_alive", "2x5 0x10", **Q)],
        [
            _firing("VeoArchiverNoWorkers", "9m"),
            _firing("VeoArchiverNoWorkers", "11m", {**R1, **Q, "severity": "critical"}),
        ],
    ),
    (
        "the first dead letter ever, and 15 minutes later no more alert",
        [_series("veo_archiver_registry_jobs", "0x20 1x30", registry="failed", **Q)],
        [
            _firing("VeoArchiverDeadLettersRising", "20m"),
            _firing("VeoArchiverDeadLettersRising", "21m", {**R1, **Q, "registry": "failed", "severity": "warning"}),
            _firing("VeoArchiverDeadLettersRising", "37m"),
        ],
    ),
    (
        "dead letters retried (fewer) are no rise",
        [_series("veo_archiver_registry_jobs", "5x20 0x20", registry="failed", **Q)],
        [_firing("VeoArchiverDeadLettersRising", f"{m}m") for m in (16, 21, 25, 35)],
    ),
    (
        "a queue that stops draining, then reaches half of useapi.net's URL lifetime",
        [_series("veo_archiver_oldest_queued_job_age_seconds", "0+60x200", **Q)],
        [
            _firing("VeoArchiverQueueNotDraining", "10m"),
            _firing("VeoArchiverQueueNotDraining", "21m", {**R1, **Q, "severity": "warning"}),
            _firing("VeoArchiverOldestJobNearUrlDeadline", "179m"),
            _firing("VeoArchiverOldestJobNearUrlDeadline", "181m", {**R1, **Q, "severity": "critical"}),
        ],
    ),
    (
        "503s for 5 minutes, added up across receivers",
        [
            _series("veo_archiver_callbacks_unavailable_total", "0+1x30", provider="kie", reason="queue_unavailable"),
            _series(
                "veo_archiver_callbacks_unavailable_total",
                "0+1x30",
                provider="kie",
                reason="queue_unavailable",
                instance="r2",
            ),
        ],
        [
            _firing("VeoArchiverCallbacksUnavailable", "4m"),
            _firing("VeoArchiverCallbacksUnavailable", "12m", {"provider": "kie", "severity": "critical"}),
        ],
    ),
    (
        "half the callbacks of one provider refused, none of another",
        [
            _series("veo_archiver_callbacks_received_total", "0+10x60", provider="kie"),
            _series("veo_archiver_callbacks_rejected_total", "0+5x60", provider="kie", reason="bad_signature"),
            _series("veo_archiver_callbacks_received_total", "0+10x60", provider="apixo"),
            _series("veo_archiver_callbacks_rejected_total", "0+0x60", provider="apixo", reason="bad_token"),
        ],
        [
            _firing("VeoArchiverCallbacksRejected", "10m"),  # pending: 15 minutes needed
            _firing("VeoArchiverCallbacksRejected", "40m", {"provider": "kie", "severity": "warning"}),
        ],
    ),
    (
        "tracked tasks never all finished for 2 hours",
        [_series("veo_archiver_tracked_tasks_pending", "3x130")],
        [
            _firing("VeoArchiverTrackedTasksNotFinishing", "119m"),
            _firing("VeoArchiverTrackedTasksNotFinishing", "121m", {**R1, "severity": "warning"}),
        ],
    ),
    (
        "tracked tasks that all finished once in 2 hours",
        [_series("veo_archiver_tracked_tasks_pending", "3x60 0 3x70")],
        [_firing("VeoArchiverTrackedTasksNotFinishing", "125m")],
    ),
    (
        "a spool that does not drain while Redis answers",
        [_series("veo_archiver_spool_oldest_age_seconds", "0 0 200x20"), _series("veo_archiver_redis_up", "1x25")],
        [
            _firing("VeoArchiverSpoolNotDraining", "4m"),  # old since 2m: pending for 5 minutes
            _firing("VeoArchiverSpoolNotDraining", "8m", {**R1, "severity": "warning"}),
        ],
    ),
    (
        "a spool that waits only while Redis is down raises nothing",
        [_series("veo_archiver_spool_oldest_age_seconds", "0 0 200x20"), _series("veo_archiver_redis_up", "1 1 0x20")],
        [_firing("VeoArchiverSpoolNotDraining", "10m")],
    ),
    (
        "quarantined spool entries",
        [_series("veo_archiver_spool_rejected_entries", "0 0 1x10")],
        [_firing("VeoArchiverSpoolQuarantined", "4m", {**R1, "severity": "warning"})],
    ),
    (
        "a receiver shedding requests for 10 minutes",
        [_series("veo_archiver_requests_shed_total", "0+30x30", reason="overloaded")],
        [
            _firing("VeoArchiverRequestsShed", "8m"),
            _firing("VeoArchiverRequestsShed", "20m", {"instance": "r1", "severity": "warning"}),
        ],
    ),
    (
        "no receiver scraped",
        [_series("up", "0x20")],
        [
            _firing("VeoArchiverMetricsAbsent", "9m"),
            _firing("VeoArchiverMetricsAbsent", "11m", {"severity": "warning"}),
        ],
    ),
    (
        "a healthy system raises nothing",
        [
            _series("veo_archiver_redis_up", "1x200"),
            _series("veo_archiver_workers_alive", "2x200", **Q),
            _series("veo_archiver_oldest_queued_job_age_seconds", "0 3 0 1x200", **Q),
            _series("veo_archiver_registry_jobs", "4x200", registry="failed", **Q),
            _series("veo_archiver_callbacks_received_total", "0+10x200", provider="kie"),
            _series("veo_archiver_callbacks_rejected_total", "0x200", provider="kie", reason="bad_signature"),
            _series("veo_archiver_callbacks_unavailable_total", "0x200", provider="kie", reason="queue_unavailable"),
            _series("veo_archiver_tracked_tasks_pending", "0x200"),
        ],
        [],  # filled below: every alert, none firing at 190m
    ),
]


def test_each_alert_fires_when_it_should_and_only_then(tmp_path: Path) -> None:
    """``promtool test rules`` on sample series. Annotations are left out of the copy tested, because promtool
    compares them in full; their templates are checked by ``promtool check rules``."""
    rules = load_rules()
    stripped = {
        "groups": [
            {"name": "veo-archiver", "rules": [{k: v for k, v in r.items() if k != "annotations"} for r in rules]}
        ]
    }
    rules_file = tmp_path / "alerts-without-annotations.yaml"
    rules_file.write_text(yaml.safe_dump(stripped, sort_keys=False))
    tested = {case["alertname"] for _, _, cases in ALERT_CASES for case in cases}
    assert tested == {r["alert"] for r in rules}, "every alert needs a case"
    tests = []
    for what, series, cases in ALERT_CASES:
        if not cases:
            cases = [_firing(r["alert"], "190m") for r in rules]
        tests.append({"name": what, "interval": "1m", "input_series": series, "alert_rule_test": cases})
    spec = {"rule_files": [str(rules_file)], "evaluation_interval": "1m", "tests": tests}
    test_file = tmp_path / "alerts-test.yaml"
    test_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    result = run_promtool("test", "rules", test_file)
    assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------------------------------------------- dashboard


def test_dashboard_is_well_formed() -> None:
    dashboard = load_dashboard()
    assert dashboard["title"] == "veo-archiver"
    assert dashboard["uid"] == "veo-archiver"
    assert 36 <= dashboard["schemaVersion"] <= 41
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = []
    for panel in panels(dashboard):
        if panel.get("type") == "row":
            continue
        ids.append(panel["id"])
        assert panel.get("title", "").strip(), panel
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        targets = panel.get("targets", [])
        assert targets and all(t.get("expr", "").strip() for t in targets), panel["title"]
        assert len({t["refId"] for t in targets}) == len(targets), panel["title"]
        for target in targets:
            assert target.get("datasource", panel["datasource"])["uid"] == "${datasource}", panel["title"]
    assert len(set(ids)) == len(ids), "panel ids must be unique"
    used = {name for expr in dashboard_exprs() for name in METRIC.findall(expr)}
    missing = DASHBOARD_METRICS - used
    assert not missing, f"the dashboard shows nothing of {sorted(missing)}"


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """Each query, with Grafana's $__rate_interval made 5m, as a recording rule for ``promtool check rules``."""
    exprs = dashboard_exprs()
    rules = [{"record": f"dashboard:query_{i}", "expr": GRAFANA_RANGES.sub("5m", expr)} for i, expr in enumerate(exprs)]
    assert not [r for r in rules if "$" in r["expr"]], "a Grafana variable promtool cannot parse is left"
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, sort_keys=False))
    result = run_promtool("check", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------------------------------------------- a live scrape


def exposed(text: str) -> tuple[dict[str, str], set[str]]:
    """``({family name: type}, {sample names})`` from a Prometheus text exposition."""
    families: dict[str, str] = {}
    samples: set[str] = set()
    for family in text_string_to_metric_families(text):
        families[family.name] = family.type
        samples.update(sample.name for sample in family.samples)
    return families, samples


def is_exposed(name: str, families: dict[str, str], samples: set[str]) -> bool:
    """Would a PromQL selector for ``name`` find series from this exposition?

    A sample with that exact name counts. So does a counter's ``_total`` when the counter family is there but
    has no sample yet (a labelled counter shows none before its first increment). A bare counter or histogram
    family name does not: Prometheus stores only ``_total`` and ``_bucket``/``_sum``/``_count`` series, and
    histogram series must be there as samples (a histogram without a sum has no ``_sum``/``_count``).
    """
    if name in samples:
        return True
    if name.endswith("_total") and families.get(name.removesuffix("_total")) == "counter":
        return True
    return families.get(name) in ("gauge", "untyped", "unknown")


@pytest.fixture
def scrape(redis_server: RedisServer, tmp_path: Path) -> str:
    from receiver.app import create_app
    from veo_archiver.settings import Settings

    settings = Settings.from_env(
        {
            "REDIS_URL": redis_server.url,
            "METRICS_PUBLIC": "true",
            "KIE_ALLOW_UNSIGNED": "true",
            "SPOOL_DIR": str(tmp_path / "spool"),
        }
    )
    with TestClient(create_app(settings)) as client:
        answer = client.post(
            "/callbacks/kie", content=json.dumps(KIE_CALLBACK), headers={"Content-Type": "application/json"}
        )
        assert answer.status_code == 200, answer.text
        response = client.get("/metrics")
    assert response.status_code == 200, response.text
    return response.text


def test_is_exposed_tells_series_from_family_names() -> None:
    text = (
        "# TYPE a_total counter\n"
        "# TYPE b counter\nb_total 1\n"
        '# TYPE h histogram\nh_bucket{le="+Inf"} 1\n'
        "# TYPE g gauge\n"
    )
    families, samples = exposed(text)
    assert is_exposed("a_total", families, samples)  # labelled counter with no sample yet
    assert is_exposed("b_total", families, samples)
    assert not is_exposed("b", families, samples)
    assert is_exposed("h_bucket", families, samples)
    assert not is_exposed("h_sum", families, samples)
    assert not is_exposed("h", families, samples)
    assert is_exposed("g", families, samples)
    assert not is_exposed("nope", families, samples)


def test_every_metric_in_the_dashboard_and_the_rules_is_served_by_a_receiver(scrape: str) -> None:
    families, samples = exposed(scrape)
    assert "veo_archiver_callbacks_accepted_total" in samples  # the callback was counted: the app is real
    assert "veo_archiver_redis_up" in samples and "veo_archiver_queue_depth" in samples  # Redis was read
    used = {
        "grafana-dashboard.json": {n for e in dashboard_exprs() for n in METRIC.findall(e)},
        "alerts.yaml": {n for e in rule_exprs() for n in METRIC.findall(e)},
    }
    assert all(used.values())
    unknown = {f: sorted(n for n in names if not is_exposed(n, families, samples)) for f, names in used.items()}
    assert unknown == {f: [] for f in used}, f"not served by GET /metrics: {unknown}"
