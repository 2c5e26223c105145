"""Every Sigma value form and modifier: what matches and what does not, per the specification."""
from __future__ import annotations

import base64

import pytest


def test_plain_string_is_case_insensitive_equality(matcher) -> None:
    m = matcher("  sel:\n    Image: 'C:\\Windows\\System32\\cmd.exe'\n  condition: sel\n")
    assert m({"Image": "c:\\windows\\system32\\CMD.EXE"})
    assert not m({"Image": "C:\\Windows\\System32\\cmd.exe.bak"})
    assert not m({"Image": "D:\\Windows\\System32\\cmd.exe"})
    assert not m({"Other": "C:\\Windows\\System32\\cmd.exe"})


def test_wildcards_star_question_and_escapes(matcher) -> None:
    star = matcher("  sel:\n    Image: '*\\cmd.exe'\n  condition: sel\n")
    assert star({"Image": "C:\\x\\CMD.exe"}) and not star({"Image": "C:\\x\\cmd.exe2"})
    question = matcher("  sel:\n    Image: 'prog?.exe'\n  condition: sel\n")
    assert question({"Image": "progA.exe"}) and not question({"Image": "prog.exe"}) and not question({"Image": "progAB.exe"})
    middle = matcher("  sel:\n    CommandLine: 'a*b?c'\n  condition: sel\n")
    assert middle({"CommandLine": "aXXbYc"}) and middle({"CommandLine": "a\nb.c"}) and not middle({"CommandLine": "aXXbc"})
    literal_star = matcher("  sel:\n    Name: 'file\\*.txt'\n  condition: sel\n")
    assert literal_star({"Name": "file*.txt"}) and not literal_star({"Name": "file1.txt"})
    backslash_then_wildcard = matcher("  sel:\n    Path: 'C:\\\\*'\n  condition: sel\n")
    assert backslash_then_wildcard({"Path": "C:\\anything"}) and not backslash_then_wildcard({"Path": "D:\\x"})
    plain_backslash = matcher("  sel:\n    Path: 'C:\\Temp\\a.exe'\n  condition: sel\n")
    assert plain_backslash({"Path": "c:\\temp\\A.EXE"})


def test_only_star_requires_a_value(matcher) -> None:
    m = matcher("  sel:\n    User: '*'\n  condition: sel\n")
    assert m({"User": "x"}) and m({"User": ""}) and not m({}) and not m({"User": None})


def test_empty_string_and_null(matcher) -> None:
    empty = matcher("  sel:\n    Description: ''\n  condition: sel\n")
    assert empty({"Description": ""}) and not empty({"Description": "x"}) and not empty({})
    null = matcher("  sel:\n    PasswordLastSet: null\n  condition: sel\n")
    assert null({}) and null({"PasswordLastSet": None})
    assert not null({"PasswordLastSet": ""}) and not null({"PasswordLastSet": "%%1794"})


def test_numbers_match_numbers_and_numeric_text(matcher) -> None:
    m = matcher("  sel:\n    EventID: 4688\n  condition: sel\n")
    assert m({"EventID": 4688}) and m({"EventID": "4688"})
    assert not m({"EventID": 46880}) and not m({"EventID": "4689"})
    quoted = matcher("  sel:\n    EventID: '4688'\n  condition: sel\n")
    assert quoted({"EventID": 4688}) and quoted({"EventID": "4688"})


def test_booleans(matcher) -> None:
    m = matcher("  sel:\n    Enabled: true\n  condition: sel\n")
    assert m({"Enabled": True}) and m({"Enabled": "True"}) and not m({"Enabled": False})


def test_list_is_or_and_all_is_and(matcher) -> None:
    any_of = matcher("  sel:\n    EventID: [517, 1102]\n  condition: sel\n")
    assert any_of({"EventID": 517}) and any_of({"EventID": 1102}) and not any_of({"EventID": 4624})
    all_of = matcher("  sel:\n    CommandLine|contains|all:\n      - ' -exec '\n      - ' bypass'\n  condition: sel\n")
    assert all_of({"CommandLine": "ps -exec  BYPASS"}) and all_of({"CommandLine": "x bypass -Exec y"})
    assert not all_of({"CommandLine": "ps -exec x"})


def test_map_is_and_list_of_maps_is_or(matcher) -> None:
    both = matcher("  sel:\n    EventLog: Security\n    EventID: [517, 1102]\n  condition: sel\n")
    assert both({"EventLog": "Security", "EventID": 517}) and not both({"EventLog": "System", "EventID": 517})
    either = matcher("  sel:\n    - Image|endswith: '\\example.exe'\n    - Description|contains: 'Test executable'\n"
                     "  condition: sel\n")
    assert either({"Image": "C:\\example.exe"}) and either({"Description": "a test executable!"})
    assert not either({"Image": "C:\\other.exe", "Description": "none"})


def test_contains_startswith_endswith(matcher) -> None:
    contains = matcher("  sel:\n    CommandLine|contains: ['mimikatz', 'sekurlsa::']\n  condition: sel\n")
    assert contains({"CommandLine": "x MIMIKATZ y"}) and contains({"CommandLine": "sekurlsa::logonpasswords"})
    assert not contains({"CommandLine": "mimi katz"})
    starts = matcher("  sel:\n    Image|startswith: 'C:\\Users\\'\n  condition: sel\n")
    assert starts({"Image": "c:\\users\\bob\\a.exe"}) and not starts({"Image": "D:\\C:\\Users\\"})
    ends = matcher("  sel:\n    Image|endswith: ['\\cmd.exe', '\\powershell.exe']\n  condition: sel\n")
    assert ends({"Image": "C:\\x\\PowerShell.exe"}) and not ends({"Image": "C:\\cmd.exe\\x"})


def test_many_contains_values_use_one_automaton(matcher) -> None:
    values = "".join(f"      - 'tool{i}'\n" for i in range(20))
    m = matcher(f"  sel:\n    CommandLine|contains:\n{values}  condition: sel\n")
    assert m({"CommandLine": "run TOOL17 now"}) and not m({"CommandLine": "run tool now"})


def test_regex_is_case_sensitive_unanchored_with_flags(matcher) -> None:
    m = matcher("  sel:\n    CommandLine|re: 'Invoke-[A-Z]\\w+'\n  condition: sel\n")
    assert m({"CommandLine": "x Invoke-Mimikatz y"}) and not m({"CommandLine": "invoke-mimikatz"})
    i = matcher("  sel:\n    CommandLine|re|i: '^invoke-[a-z]+$'\n  condition: sel\n")
    assert i({"CommandLine": "Invoke-Mimikatz"}) and not i({"CommandLine": "x Invoke-Mimikatz"})
    multi = matcher("  sel:\n    Script|re|m: '^evil$'\n  condition: sel\n")
    assert multi({"Script": "good\nevil\nok"}) and not matcher("  sel:\n    Script|re: '^evil$'\n  condition: sel\n")(
        {"Script": "good\nevil\nok"})
    dotall = matcher("  sel:\n    Script|re|s: 'begin.+end'\n  condition: sel\n")
    assert dotall({"Script": "begin\n\nend"}) and not matcher("  sel:\n    Script|re: 'begin.+end'\n  condition: sel\n")(
        {"Script": "begin\n\nend"})


@pytest.mark.timeout(20)
@pytest.mark.parametrize("pattern", ["^(a|aa)+$", "^(a+)+$", "^(?:a|a)*$", "^((a+)c?){2,}$"])
def test_regex_that_backtracks_exponentially_runs_in_linear_time(matcher, pattern: str) -> None:
    m = matcher(f"  sel:\n    CommandLine|re: '{pattern}'\n  condition: sel\n")
    assert not m({"CommandLine": "a" * 5000 + "b"}) and m({"CommandLine": "aaaa"})


def test_regex_engine_choice_and_flags_with_re2(matcher) -> None:
    from opmas.core.sigma.regex import backtrack_paths, compile_regex

    assert backtrack_paths("evil$") == 1 and backtrack_paths("(?:ab|cd){2,5}") == 4 + 8 + 16 + 32
    assert backtrack_paths("(x(a+))+") == float("inf")
    # every pattern RE2 can run with Python's meaning runs there, ordinary or not
    assert compile_regex("evil$").engine == "re2" and compile_regex("(a+)+").engine == "re2"
    m = matcher("  sel:\n    Script|re|i|m|s: '^(?:evil|bad)+.end$'\n  condition: sel\n")
    assert m({"Script": "ok\nEVILbad\nEND"}) and not m({"Script": "ok\nEVILbad\nENDx"})


def test_regex_that_backtracks_exponentially_and_re2_cannot_run_is_refused() -> None:
    from opmas.core.sigma.regex import compile_regex, compile_search

    with pytest.raises(ValueError, match=r"'\^\(a\+\)\+\\1\$' cannot run in RE2 .*could backtrack badly"):
        compile_regex(r"^(a+)+\1$")
    assert compile_regex(r"^(a)\1$").engine == "re"
    assert compile_search(r"^(a)\1$")("aa")  # back-references are fine where nothing backtracks badly


def test_regex_sees_booleans_as_plain_matching_does(matcher) -> None:
    m = matcher("  sel:\n    Enabled|re: '^true$'\n  condition: sel\n")
    assert m({"Enabled": True}) and m({"Enabled": [False, True]}) and not m({"Enabled": False})
    assert not matcher("  sel:\n    Enabled|re: '^True$'\n  condition: sel\n")({"Enabled": True})


def test_regex_contains_and_numbers(matcher) -> None:
    m = matcher("  sel:\n    Port|re: '^44[0-9]$'\n  condition: sel\n")
    assert m({"Port": 443}) and not m({"Port": 4430})


def test_cidr_v4_v6(matcher) -> None:
    m = matcher("  sel:\n    DestinationIp|cidr: ['10.0.0.0/8', 'fe80::/10']\n  condition: sel\n")
    assert m({"DestinationIp": "10.20.30.40"}) and m({"DestinationIp": "fe80::1"})
    assert not m({"DestinationIp": "11.0.0.1"}) and not m({"DestinationIp": "not-an-ip"}) and not m({})


def test_base64_and_base64offset(matcher) -> None:
    exact = matcher("  sel:\n    Payload|base64: 'hello'\n  condition: sel\n")
    assert exact({"Payload": base64.b64encode(b"hello").decode()}) and not exact({"Payload": "hello"})
    offset = matcher("  sel:\n    CommandLine|base64offset|contains: 'http://'\n  condition: sel\n")
    for prefix in (b"", b"a", b"ab", b"abc"):
        encoded = base64.b64encode(prefix + b"http://evil.example/x").decode()
        assert offset({"CommandLine": f"powershell -e {encoded}"}), prefix
    assert not offset({"CommandLine": base64.b64encode(b"https://fine.example").decode()})


def test_utf16_encodings_with_base64(matcher) -> None:
    payload = "IEX (New-Object Net.WebClient)"
    wide = matcher("  sel:\n    CommandLine|wide|base64offset|contains: 'New-Object Net.WebClient'\n  condition: sel\n")
    for prefix in ("", "x", "xy"):
        encoded = base64.b64encode((prefix + payload).encode("utf-16le")).decode()
        assert wide({"CommandLine": "powershell -enc " + encoded})
    assert not wide({"CommandLine": base64.b64encode(payload.encode()).decode()})
    le = matcher("  sel:\n    Blob|utf16le|base64: 'cmd'\n  condition: sel\n")
    assert le({"Blob": base64.b64encode("cmd".encode("utf-16le")).decode()})
    be = matcher("  sel:\n    Blob|utf16be|base64: 'cmd'\n  condition: sel\n")
    assert be({"Blob": base64.b64encode("cmd".encode("utf-16be")).decode()})
    assert not be({"Blob": base64.b64encode("cmd".encode("utf-16le")).decode()})
    bom = matcher("  sel:\n    Blob|utf16|base64: 'cmd'\n  condition: sel\n")
    assert bom({"Blob": base64.b64encode(b"\xff\xfe" + "cmd".encode("utf-16le")).decode()})


def test_windash(matcher) -> None:
    m = matcher("  sel:\n    CommandLine|windash|contains: ' -enc '\n  condition: sel\n")
    for dash in ("-", "/", "\u2013", "\u2014", "\u2015"):
        assert m({"CommandLine": f"powershell {dash}enc AAAA"}), dash
    assert not m({"CommandLine": "powershell +enc AAAA"})


def test_exists(matcher) -> None:
    present = matcher("  sel:\n    PasswordLastSet|exists: true\n  condition: sel\n")
    assert present({"PasswordLastSet": "x"}) and present({"PasswordLastSet": None}) and not present({})
    absent = matcher("  sel:\n    PasswordLastSet|exists: false\n  condition: sel\n")
    assert absent({}) and not absent({"PasswordLastSet": ""})


def test_exists_and_null_of_an_object_valued_field(matcher) -> None:
    present = matcher("  sel:\n    process|exists: true\n  condition: sel\n")
    assert present({"process": {"pid": 4}}) and present({"process": [{"pid": 4}]}) and not present({"proc": 1})
    null = matcher("  sel:\n    process: null\n  condition: sel\n")
    assert not null({"process": {"pid": 4}}) and null({"other": 1})
    text = matcher("  sel:\n    process|contains: pid\n  condition: sel\n")
    assert not text({"process": {"pid": 4}})
    child = matcher("  sel:\n    process.pid: 4\n  condition: sel\n")
    assert child({"process": {"pid": 4}})


@pytest.mark.parametrize("modifier,value,yes,no", [
    ("gt", 10, [11, "12", 10.5], [10, 9, "abc"]),
    ("gte", 10, [10, "10"], [9.99]),
    ("lt", 10, [9, "-1"], [10, "x"]),
    ("lte", 10, [10, 0], [11]),
])
def test_numeric_comparisons(matcher, modifier: str, value: int, yes: list, no: list) -> None:
    m = matcher(f"  sel:\n    Count|{modifier}: {value}\n  condition: sel\n")
    assert all(m({"Count": v}) for v in yes) and not any(m({"Count": v}) for v in no)
    assert not m({})


def test_only_decimal_float_or_hex_text_is_a_number(matcher) -> None:
    m = matcher("  sel:\n    Count|gt: 10\n  condition: sel\n")
    assert m({"Count": "1e3"}) and m({"Count": " 11.5 "}) and m({"Count": "0x1F"})
    assert not any(m({"Count": v}) for v in ["inf", "Infinity", "nan", "1_000", "0x", "12abc"])
    eq = matcher("  sel:\n    Count: 1000\n  condition: sel\n")
    assert eq({"Count": "1000.0"}) and not eq({"Count": "1_000"})


def test_fieldref(matcher) -> None:
    same = matcher("  sel:\n    TargetUserName|fieldref: SubjectUserName\n  condition: sel\n")
    assert same({"TargetUserName": "Bob", "SubjectUserName": "bob"})
    assert not same({"TargetUserName": "bob", "SubjectUserName": "alice"}) and not same({"TargetUserName": "bob"})
    contained = matcher("  sel:\n    CommandLine|fieldref|contains: User\n  condition: sel\n")
    assert contained({"CommandLine": "net user BOB /add", "User": "bob"}) and not contained({"CommandLine": "x", "User": "bob"})
    numbers = matcher("  sel:\n    ProcessId|fieldref: ParentProcessId\n  condition: sel\n")
    assert numbers({"ProcessId": 4, "ParentProcessId": 4}) and not numbers({"ProcessId": 4, "ParentProcessId": 5})


def test_fieldref_matches_any_element_of_a_list(matcher) -> None:
    same = matcher("  sel:\n    a|fieldref: b\n  condition: sel\n")
    assert same({"a": ["x", "Y"], "b": "y"}) and same({"a": "y", "b": ["x", "y"]}) and same({"a": [1, 2], "b": 2})
    assert not same({"a": ["x", "z"], "b": "y"}) and not same({"a": [], "b": "y"})
    contained = matcher("  sel:\n    a|fieldref|contains: b\n  condition: sel\n")
    assert contained({"a": ["net user bob", "x"], "b": "BOB"}) and not contained({"a": ["x"], "b": "bob"})


def test_cased(matcher) -> None:
    m = matcher("  sel:\n    CommandLine|cased|contains: 'PowerShell'\n  condition: sel\n")
    assert m({"CommandLine": "x PowerShell y"}) and not m({"CommandLine": "x powershell y"})
    eq = matcher("  sel:\n    Name|cased: 'Admin'\n  condition: sel\n")
    assert eq({"Name": "Admin"}) and not eq({"Name": "admin"})


def test_neq_numbers_strings_and_fieldref(matcher) -> None:
    m = matcher("  sel:\n    LogonType|neq: 3\n  condition: sel\n")
    assert m({"LogonType": 2}) and not m({"LogonType": 3})
    text = matcher("  sel:\n    Name|neq: admin\n  condition: sel\n")
    assert text({"Name": "bob"}) and not text({"Name": "ADMIN"})
    ref = matcher("  sel:\n    Name|fieldref|neq: Other\n  condition: sel\n")
    assert ref({"Name": "bob", "Other": "admin"}) and not ref({"Name": "admin", "Other": "Admin"})


def test_hour_of_timestamp(matcher) -> None:
    m = matcher("  sel:\n    Time|hour: 3\n  condition: sel\n")
    assert m({"Time": "2024-05-01T03:15:00Z"}) and not m({"Time": "2024-05-01T04:15:00Z"})


def test_hour_of_an_out_of_range_timestamp_is_no_match(matcher) -> None:
    m = matcher("  sel:\n    T|hour: 3\n  condition: sel\n")
    for value in ["inf", "-inf", "nan", 1e20, "1e20", -1e15]:
        assert not m({"T": value}), value
    assert m({"T": 3 * 3600 + 5})


def test_expand_placeholders_from_mapping_file(matcher, tmp_path) -> None:
    mapping = tmp_path / "site.yml"
    mapping.write_text("name: site\nplaceholders:\n  Admins: [root, 'adm_*']\n")  # placeholders only
    m = matcher("  sel:\n    user.name|expand: '%Admins%'\n  condition: sel\n", mappings=[mapping])
    assert m({"user": {"name": "root"}}) and m({"user": {"name": "ADM_bob"}}) and not m({"user": {"name": "bob"}})


def test_expand_escaped_percent_is_a_literal_percent_sign(matcher, tmp_path) -> None:
    """Sigma spec: ``field|expand: \\%plain%name%`` handles ``%plain`` as plain value and ``%name%`` as placeholder."""
    mapping = tmp_path / "site.yml"
    mapping.write_text("name: site\nplaceholders:\n  name: bob\n  user: [bob]\n")
    spec = matcher("  sel:\n    P|expand: '\\%plain%name%'\n  condition: sel\n", mappings=[mapping])
    assert spec({"P": "%plainbob"}) and not spec({"P": "\\bob"}) and not spec({"P": "%plain%name%"})
    path = matcher("  sel:\n    P|expand: 'C:\\Users\\\\%user%\\AppData'\n  condition: sel\n", mappings=[mapping])
    assert path({"P": "C:\\Users\\bob\\AppData"})
    percent = matcher("  sel:\n    P|expand|endswith: '100\\%'\n  condition: sel\n", mappings=[mapping])
    assert percent({"P": "at 100%"}) and not percent({"P": "at 100\\%"})


def test_list_values_in_events_match_any_element(matcher) -> None:
    m = matcher("  sel:\n    tags|contains: 'evil'\n  condition: sel\n")
    assert m({"tags": ["ok", "very EVIL"]}) and not m({"tags": ["ok"]}) and not m({"tags": []})


def test_keywords_search_message_case_insensitively(matcher) -> None:
    m = matcher("  keywords:\n    - 'EVILSERVICE'\n    - 'svchost.exe -n evil'\n  condition: keywords\n")
    assert m({"message": "started evilservice now"}) and m({"message": "SVCHOST.EXE -n evil"})
    assert not m({"message": "nothing"}) and not m({"other": "evilservice"})
    all_of = matcher("  keywords:\n    '|all':\n      - 'OabVirtualDirectory'\n      - ' -ExternalUrl '\n"
                     "  condition: keywords\n")
    assert all_of({"message": "Set-OabVirtualDirectory -ExternalUrl http://x"})
    assert not all_of({"message": "Set-OabVirtualDirectory"})
    wildcard = matcher("  keywords:\n    - 'failed * for root'\n  condition: keywords\n")
    assert wildcard({"message": "sshd: Failed password for root from 1.2.3.4"}) and not wildcard({"message": "for root failed"})


def test_keywords_search_all_evtx_strings() -> None:
    from tests.unit.engine.conftest import load_ok, matched_ids, rule_text

    ruleset = load_ok(rule_text("  keywords: ['mimikatz']\n  condition: keywords\n", "{product: windows}"))
    event = {"Event": {"System": {"Channel": "Application", "EventID": 1000},
                       "EventData": {"Data": [{"@Name": "Message", "#text": "found MimiKatz.exe"}]}}}
    assert matched_ids(ruleset, [event]) == ["test-rule"]
    assert matched_ids(ruleset, [{"Event": {"System": {"Channel": "Application"}, "EventData": {"x": "clean"}}}]) == []


def test_placeholder_only_mapping_describes_no_events(tmp_path) -> None:
    from opmas.core.logsource import builtin_mappings
    from tests.unit.engine.conftest import load_ok, rule_text

    mapping = tmp_path / "site.yml"
    mapping.write_text("name: site\nplaceholders:\n  Admins: root\n")
    ruleset = load_ok(rule_text("  s:\n    User|expand: '%Admins%'\n  condition: s\n"), mappings=[mapping])
    assert "site" not in [m.name for m in ruleset.mappings]
    assert [m.name for m in ruleset.mappings] == [m.name for m in builtin_mappings()]


def test_numbers_compare_by_value_not_text(matcher) -> None:
    m = matcher("  sel:\n    Count: 1.0\n  condition: sel\n")
    assert m({"Count": "1"}) and m({"Count": 1}) and not m({"Count": "10"})
    hexa = matcher("  sel:\n    Mask: 16\n  condition: sel\n")
    assert hexa({"Mask": "0x10"}) and hexa({"Mask": "16"}) and not hexa({"Mask": "0x11"})
