"""Policy loading and validation: every error kind is reported with its file:line, all
problems at once, and a valid policy yields the lookups the detections use."""

from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otsec.policy.loader import PolicyError, load_policy, parse_policy
from otsec.policy.model import protocol_name

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "policies" / "example-plant.yaml"

# A small valid policy; tests break one line of it at a time (line numbers are 1-based).
BASE = textwrap.dedent("""\
    version: 1
    zones:
      - name: control
        level: 2
        cidrs: [10.40.0.0/24]
        sl_t: 3
      - name: field
        level: 1
        cidrs: [10.50.0.0/24]
    assets:
      - {name: hmi-1, ip: 10.40.0.10, mac: "00:0e:8c:28:00:0a", zone: control, role: hmi}
      - {name: plc-1, ip: 10.50.0.20, zone: field, role: plc}
    conduits:
      - name: hmi-to-field
        zones: [control, field]
        initiator: control
        allow:
          - protocol: modbus
            ports: [502]
            operations: [read, write]
            sources: [hmi-1]
            destinations: [plc]
            write_targets:
              - holding_register: 100-199
    rules:
      suppressions:
        - rule: OTSEC-NEWCOMM-001
          src: hmi-1
          reason: commissioning
          expires: 2026-06-30
    """)


def errors_of(text: str) -> list[str]:
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "p.yaml")
    return info.value.errors


def replace_line(lineno: int, new: str) -> str:
    lines = BASE.splitlines()
    lines[lineno - 1] = new
    return "\n".join(lines) + "\n"


def assert_error(text: str, line: int, fragment: str) -> None:
    errs = errors_of(text)
    assert any(e.startswith(f"p.yaml:{line}: ") and fragment in e for e in errs), errs


def test_base_policy_is_valid_and_located():
    p = parse_policy(BASE, "p.yaml")
    assert p.summary() == "2 zones, 2 assets, 1 conduits (1 allow rules), 1 suppressions"
    loc = p.locate("10.50.0.20")
    assert (loc.zone_name, loc.asset.name) == ("field", "plc-1")
    assert p.locate("10.50.0.99").asset is None and p.locate("10.50.0.99").zone_name == "field"
    assert p.locate("192.0.2.1").zone is None
    assert p.rules.suppressions[0].expires == dt.date(2026, 6, 30)
    rule = p.conduits["hmi-to-field"].allow[0]
    assert rule.write_targets[0].kind == "holding_register"
    assert (rule.write_targets[0].start, rule.write_targets[0].end) == (100, 199)


def test_example_plant_policy_is_valid():
    p = load_policy(EXAMPLE)
    assert len(p.zones) == 5 and len(p.assets) == 9 and len(p.conduits) == 5
    assert p.zones["dmz"].level == 3.5
    assert p.conduit_between("field", "control").name == "hmi-to-field"
    assert p.assets["plc-modbus"].mac == "00:80:f4:32:00:14"


@pytest.mark.parametrize("line,new,fragment", [
    (5, "    cidrs: [10.40.0.0/33]", "bad CIDR '10.40.0.0/33'"),
    (5, "    cidrs: [10.40.0.1/24]", "bad CIDR '10.40.0.1/24'"),           # host bits set
    (9, "    cidrs: [10.40.0.0/16]", "overlaps 10.40.0.0/24 of zone 'control' (line 5)"),
    (4, "    level: 7", "bad Purdue level 7"),
    (4, "    level: 2.5", "bad Purdue level 2.5"),
    (6, "    sl_t: 5", "bad SL-T 5"),
    (6, "    cidr: [10.1.0.0/24]", "unknown key 'cidr' (did you mean 'cidrs'?)"),
    (7, "  - name: control", "duplicate zone name 'control' (first defined on line 3)"),
    (11, '  - {name: hmi-1, ip: 10.50.0.10, zone: control, role: hmi}', "IP 10.50.0.10 is outside zone 'control'"),
    (11, '  - {name: hmi-1, ip: 10.40.0.300, zone: control, role: hmi}', "bad IP address '10.40.0.300'"),
    (11, '  - {name: hmi-1, ip: 10.40.0.10, mac: "00:0e:8c", zone: control, role: hmi}', "bad MAC address"),
    (11, '  - {name: hmi-1, ip: 10.40.0.10, zone: contrl, role: hmi}', "unknown zone 'contrl' (did you mean 'control'?)"),
    (11, '  - {name: hmi-1, ip: 10.40.0.10, zone: control, role: hmii}', "unknown role 'hmii' (did you mean 'hmi'?)"),
    (11, '  - {name: hmi-1, ip: 10.40.0.10, zone: control, role: hmi, criticality: extreme}', "unknown criticality"),
    (12, "  - {name: hmi-1, ip: 10.50.0.20, zone: field, role: plc}", "duplicate asset name 'hmi-1' (first defined on line 11)"),
    (12, "  - {name: plc-1, ip: 10.40.0.10, zone: control, role: plc}", "IP 10.40.0.10 already used by asset 'hmi-1' (line 11)"),
    (15, "    zones: [control, feild]", "unknown zone 'feild' (did you mean 'field'?)"),
    (15, "    zones: [control, control]", "'zones' must name two different zones"),
    (16, "    initiator: enterprise", "initiator 'enterprise' must be one of its zones or 'both'"),
    (18, "      - protocol: modbuss", "unknown protocol 'modbuss' (did you mean 'modbus'?)"),
    (19, "        ports: [70000]", "bad port 70000"),
    (20, "        operations: [read, wirte]", "unknown operation class 'wirte' (did you mean 'write'?)"),
    (21, "        sources: [hmi-2]", "'sources' entry 'hmi-2' is neither an asset name nor a role (did you mean 'hmi-1'?)"),
    (24, "          - holding_register: 199-100", "bad range '199-100'"),
    (24, "          - holding_registers: 100-199", "unknown key 'holding_registers'"),
    (27, "    - rule: OTSEC-NOPE-001", "unknown rule id 'OTSEC-NOPE-001'"),
    (29, "      reason: ''", "needs a non-empty 'reason'"),
    (30, "      expires: next week", "'expires' must be a date"),
    (1, "version: 2", "unsupported policy version 2"),
])
def test_each_error_is_reported_with_its_line(line, new, fragment):
    assert_error(replace_line(line, new), line, fragment)


def test_conduit_asset_outside_its_zones():
    text = BASE.replace("""  - {name: plc-1, ip: 10.50.0.20, zone: field, role: plc}
""", """  - {name: plc-1, ip: 10.50.0.20, zone: field, role: plc}
  - {name: far, ip: 10.60.0.1, zone: dmz, role: server}
""").replace("""  - name: field
""", """  - name: dmz
    level: 3.5
    cidrs: [10.60.0.0/24]
  - name: field
""").replace("sources: [hmi-1]", "sources: [far]")
    assert_error(text, 25, "asset 'far' is in zone 'dmz', not in control or field")


def test_all_problems_reported_at_once_in_line_order():
    text = (BASE.replace("level: 1", "level: 9").replace("role: plc", "role: robot")
            .replace("protocol: modbus", "protocol: dnp"))
    errs = errors_of(text)
    assert [e.split(":")[1] for e in errs] == ["8", "12", "18"]
    assert "bad Purdue level 9" in errs[0] and "unknown role 'robot'" in errs[1]
    assert "unknown protocol 'dnp'" in errs[2]


def test_duplicate_mapping_key_is_an_error():
    assert_error(BASE.replace("    sl_t: 3\n", "    sl_t: 3\n    sl_t: 2\n"), 7, "duplicate key 'sl_t'")


def test_write_targets_need_write():
    assert_error(BASE.replace("operations: [read, write]", "operations: [read]"), 23,
                 "'write_targets' given but 'write' is not an allowed operation")


def test_opcua_mode_only_on_opcua_and_must_be_known():
    text = BASE.replace("""        write_targets:
          - holding_register: 100-199
""", """        require:
          opcua_security_mode: Encrypt
""")
    errs = errors_of(text)
    assert any(":24: " in e and "unknown OPC UA security mode 'Encrypt'" in e for e in errs), errs
    assert any(":24: " in e and "'opcua_security_mode' needs protocol opcua" in e for e in errs), errs


def test_second_conduit_for_the_same_zone_pair():
    text = BASE.replace("rules:\n", textwrap.dedent("""\
          - name: again
            zones: [field, control]
        rules:
        """), 1)
    assert_error(text, 26, "zones already joined by conduit 'hmi-to-field' (line 15)")


def test_yaml_syntax_error_has_its_line():
    errs = errors_of("zones:\n  - name: a\n    level: [1\n")
    assert len(errs) == 1 and errs[0].startswith("p.yaml:4: YAML syntax error")


def test_unclosed_bracket_names_the_line_it_was_opened_on():
    """PyYAML notices an unclosed '[' only where the next key starts; the line to fix is
    where it was opened."""
    errs = errors_of(BASE.replace("cidrs: [10.40.0.0/24]", "cidrs: [10.40.0.0/24", 1))
    assert errs == ["p.yaml:6: YAML syntax error: expected ',' or ']', but got ':' "
                    "(while parsing a flow sequence started on line 5)"]


def test_unknown_conduit_zone_is_one_error_not_one_per_asset():
    text = BASE.replace("zones: [control, field]", "zones: [control, feild]")
    errs = errors_of(text.replace("destinations: [plc]", "destinations: [plc-1]"))
    assert errs == ["p.yaml:15: conduit 'hmi-to-field': unknown zone 'feild' (did you mean 'field'?)"]


def test_misspelt_write_operation_is_one_error():
    errs = errors_of(BASE.replace("operations: [read, write]", "operations: [read, wrte]"))
    assert errs == ["p.yaml:20: conduit 'hmi-to-field' allow rule: unknown operation class 'wrte' "
                    "(did you mean 'write'?)"]


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n"])
def test_empty_policy(text):
    assert errors_of(text) == ["p.yaml:1: policy is empty (expected a mapping with 'zones', 'assets', 'conduits', 'rules')"]


def test_not_a_mapping():
    assert errors_of("- a\n- b\n") == ["p.yaml:1: policy must be a mapping with 'zones', 'assets', 'conduits', 'rules'"]


def test_missing_file_and_unknown_top_key(tmp_path):
    with pytest.raises(PolicyError) as info:
        load_policy(tmp_path / "nope.yaml")
    assert info.value.errors == [f"{tmp_path / 'nope.yaml'}: policy file not found"]
    assert_error("zone: []\n", 1, "unknown key 'zone' (did you mean 'zones'?)")


def test_zone_needs_addresses_and_level():
    errs = errors_of("zones:\n  - name: z\n")
    assert "p.yaml:2: zone 'z': missing 'level' (Purdue level 0-5 or 3.5)" in errs
    assert "p.yaml:2: zone 'z': needs 'cidrs' and/or 'vlans'" in errs


def test_rules_section_errors():
    text = BASE.replace("rules:\n", textwrap.dedent("""\
        rules:
          program_roles: [engineer]
          it_admin_protocols: {protocols: [rdp, telnett], max_level: 6}
          external: {allowed: [300.1.1.0/24]}
          cleartext_across_zones: {deny: maybe, except_conduits: [nope]}
          anomalies: {function_sweep_min: 0}
          unsafe_operations:
            modbus: {op_classes: [wrte]}
        """), 1).replace("  suppressions:", "  suppressions:", 1)
    errs = "\n".join(errors_of(text))
    for line, frag in [(26, "unknown role 'engineer'"), (27, "unknown protocol 'telnett'"),
                       (27, "bad Purdue level 6"), (28, "bad CIDR '300.1.1.0/24'"),
                       (29, "'deny' must be true or false"), (29, "unknown conduit 'nope'"),
                       (30, "expected a positive integer, got 0"), (32, "unknown operation class 'wrte'")]:
        assert f"p.yaml:{line}: " in errs and frag in errs, (line, frag, errs)


def test_protocol_names_fold_to_policy_names():
    assert protocol_name("cotp", 102) == "s7comm"
    assert protocol_name("http-alt", 8080) == "http"
    assert protocol_name("unknown", 3389) == "rdp"
    assert protocol_name("ms-wbt-server", 3389) == "rdp"
    assert protocol_name("modbus", 5020) == "modbus"


def test_control_characters_are_located():
    errs = errors_of("zones: []\nassets: [\x01]\n")
    assert len(errs) == 1 and errs[0].startswith("p.yaml:2: not a text file")


@settings(max_examples=250, deadline=None)
@given(st.text(max_size=300))
def test_any_text_gives_a_policy_or_located_errors(text):
    try:
        parse_policy(text, "p.yaml")
    except PolicyError as exc:
        assert exc.errors and all(e.startswith("p.yaml:") for e in exc.errors)


@settings(max_examples=250, deadline=None)
@given(st.integers(0, len(BASE) - 1), st.sampled_from(["", ":", "- ", "[", "x", "\n  ", "'", "{a: 1}"]))
def test_mutated_policy_gives_a_policy_or_located_errors(pos, insert):
    try:
        parse_policy(BASE[:pos] + insert + BASE[pos + 1:], "p.yaml")
    except PolicyError as exc:
        assert exc.errors and all(e.split(":")[1].isdigit() for e in exc.errors)


def test_every_policy_key_and_role_is_documented():
    from otsec.policy.loader import KEYS
    from otsec.policy.model import ROLES

    doc = (ROOT / "docs" / "policy.md").read_text()
    for section, keys in KEYS.items():
        for key in keys:
            assert f"{key}" in doc and (f"`{key}`" in doc or f"{key}:" in doc), (section, key)
    for role in ROLES:
        assert f"`{role}`" in doc, role
