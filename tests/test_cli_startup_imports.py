"""Start-up cost: each command imports what it uses. ``otsec analyze --format json`` runs
without rich, the YAML policy loader, the detectors or the database layer; ``otsec check``
without the inventory (netaddr) and the policy drafter; ``otsec policy validate`` without
the detectors. The outputs themselves are compared with the other tests of each command."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
INCIDENT = ROOT / "pcaps" / "plant_incident.pcap"
POLICY = ROOT / "policies" / "example-plant.yaml"

#: Runs a command as the ``otsec`` entry point does, then lists the modules it imported.
RUN = """
import json, sys
sys.argv = ["otsec", *json.loads(sys.argv[1])]
try:
    from otsec.cli.main import run
    run()
finally:
    with open({out!r}, "w") as f:
        json.dump(sorted(sys.modules), f)
"""


def imported(tmp_path, *args) -> set[str]:
    out = tmp_path / "modules.json"
    proc = subprocess.run([sys.executable, "-c", RUN.format(out=str(out)), json.dumps([str(a) for a in args])],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode in (0, 1), proc.stderr
    return set(json.loads(out.read_text()))


def loaded(modules: set[str], *prefixes: str) -> list[str]:
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in prefixes))


def test_analyze_json_imports_no_rich_loader_detectors_or_store(tmp_path):
    modules = imported(tmp_path, "analyze", "--no-progress", "--format", "json", INCIDENT)
    assert "otsec.analysis.inventory" in modules and "otsec.engine" in modules   # what it does use
    assert loaded(modules, "rich", "yaml", "otsec.policy.loader", "otsec.policy.draft", "otsec.detect.checker",
                  "otsec.detect.baseline", "otsec.store", "sqlite3", "otsec.report.console") == []


def test_analyze_names_vendors_without_netaddr(tmp_path):
    """netaddr's own lookup imports it and parses both its indexes (~60 ms)."""
    modules = imported(tmp_path, "analyze", "--no-progress", "--format", "json", INCIDENT)
    assert loaded(modules, "netaddr") == []


def test_analyze_table_still_draws_with_rich(tmp_path):
    modules = imported(tmp_path, "analyze", "--no-progress", INCIDENT)
    assert "otsec.report.console" in modules and "rich.table" in modules


def test_check_imports_no_inventory_drafter_or_store(tmp_path):
    modules = imported(tmp_path, "check", INCIDENT, "--policy", POLICY)
    assert "otsec.detect.checker" in modules and "otsec.policy.loader" in modules
    assert loaded(modules, "otsec.analysis.inventory", "netaddr", "otsec.policy.draft", "otsec.store",
                  "sqlite3", "otsec.report.console", "rich.progress") == []


def test_policy_validate_imports_no_detectors(tmp_path):
    modules = imported(tmp_path, "policy", "validate", POLICY)
    assert loaded(modules, "otsec.detect.checker", "otsec.detect.baseline", "otsec.analysis.inventory",
                  "otsec.policy.draft", "otsec.store") == []


def test_the_policy_package_loads_the_yaml_loader_on_first_use():
    code = ("import sys, otsec.policy.model, otsec.policy as p; before = 'yaml' in sys.modules; "
            "from otsec.policy import Policy, PolicyError, load_policy, parse_policy; "
            "import otsec.policy.loader as l, otsec.policy.model as m; "
            "print(before, load_policy is l.load_policy, parse_policy is l.parse_policy, "
            "PolicyError is l.PolicyError, Policy is m.Policy, sorted(p.__all__) == sorted(p.EXPORTS))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "True", "True", "True", "True", "True"]
    with pytest.raises(ImportError):
        exec("from otsec.policy import nothing_of_that_name")
