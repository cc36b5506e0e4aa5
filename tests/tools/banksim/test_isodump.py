"""bin/isodump as an engineer runs it: the public vector, framed input, and one clear line per mistake."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switch.iso.dialect import load_dialect
from switch.iso.framing import Framing
from switch.tools.isodump import DumpError, dump, parse_hex

ROOT = Path(__file__).resolve().parents[3]
PUBLIC_VECTOR = "01007000000000000000164242424242424242123456000000000100"
PUBLIC_JSON = '{"mti": "0100", "fields": {"2": "424242******4242", "3": "123456", "4": "000000000100"}}\n'


def isodump(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "bin" / "isodump"), *args], input=stdin,
                          capture_output=True, text=True, timeout=30)


def test_public_vector_as_json():
    result = isodump("--dialect", "iso87ascii", "--json", PUBLIC_VECTOR)
    assert (result.returncode, result.stdout, result.stderr) == (0, PUBLIC_JSON, "")


def test_public_vector_as_text():
    result = isodump("--dialect", "iso87ascii", PUBLIC_VECTOR)
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["MTI", "Message", "Type", "Indicator", "0100"]
    assert lines[1].split()[0] == "2" and lines[1].endswith("Primary Account Number (PAN)                 424242******4242")
    assert lines[2].split()[-1] == "123456" and "Processing Code" in lines[2]
    assert lines[3].split()[-1] == "000000000100" and "Amount, Transaction" in lines[3]
    assert "4242424242424242" not in result.stdout


def test_hex_of_the_ascii_bytes_and_standard_input_with_whitespace():
    as_hex = PUBLIC_VECTOR.encode().hex()
    spaced = " ".join(as_hex[i:i + 8] for i in range(0, len(as_hex), 8)) + "\n"
    result = isodump("--dialect", "iso87ascii", "--json", stdin=spaced)
    assert (result.returncode, result.stdout) == (0, PUBLIC_JSON)


def test_binary_dialect_framed_with_tpdu():
    dialect = load_dialect("iso87binary")
    message = {"t": "0200", "2": "4111111111111111", "4": "000000001000", "11": "000001", "48": "123", "70": "301"}
    wire = Framing("2b", tpdu=True).frame(dialect.encode(message), bytes.fromhex("6000010002"))
    result = isodump("--dialect", "iso87binary", "--framing", "2b", "--tpdu", "--json", wire.hex())
    assert result.stdout == (
        '{"mti": "0200", "tpdu": "6000010002", "fields": {"2": "411111******1111", "4": "000000001000", '
        '"11": "000001", "48": "[3 masked]", "70": "301"}}\n'
    )


def test_several_frames_give_one_json_line_each():
    dialect = load_dialect("iso87ascii")
    framing = Framing("4a")
    wire = b"".join(framing.frame(dialect.encode({"t": "0800", "11": stan, "70": "301"})) for stan in ("000001", "000002"))
    result = isodump("--dialect", "iso87ascii", "--framing", "4a", "--json", wire.hex())
    assert result.stdout.splitlines() == [
        '{"mti": "0800", "fields": {"11": "000001", "70": "301"}}',
        '{"mti": "0800", "fields": {"11": "000002", "70": "301"}}',
    ]


def _narrow_dialect(tmp_path: Path) -> str:
    path = tmp_path / "narrow.toml"
    path.write_text('name = "narrow"\n[fields]\n3 = { class = "IFA_NUMERIC", length = 6 }\n')
    return str(path)


def _bad_dialect_file(tmp_path: Path) -> str:
    path = tmp_path / "broken.toml"
    path.write_text("name = \n")
    return str(path)


MALFORMED = [
    ("not hex", ["--dialect", "iso87ascii", "0100zz"], "not hex: 'z' at hex digit 4 (byte offset 2); isodump reads hex digits only"),
    ("odd length", ["--dialect", "iso87binary", "020"], "odd number of hex digits (3)"),
    ("empty", ["--dialect", "iso87ascii", " "], "no input"),
    ("truncated", ["--dialect", "iso87ascii", PUBLIC_VECTOR[:-4]], "(field 4, byte offset 44)"),
    ("trailing bytes", ["--dialect", "iso87ascii", PUBLIC_VECTOR + "00"], "(field 4, byte offset 56)"),
    ("undefined field", lambda tmp: ["--dialect", _narrow_dialect(tmp), PUBLIC_VECTOR], "bitmap announces field 2"),
    ("bad length header", ["--dialect", "iso87ascii", "--framing", "4a", "31327834"], "bad length header at byte offset 0: length header b'12x4' is not 4 ASCII digits"),
    ("truncated frame", ["--dialect", "iso87ascii", "--framing", "2b", "0010" + "30" * 4], "truncated frame at byte offset 0"),
    ("unknown dialect", ["--dialect", "iso99", "00"], "unknown dialect 'iso99'"),
    ("bad dialect file", lambda tmp: ["--dialect", _bad_dialect_file(tmp), "00"], "not valid TOML"),
    ("missing dialect file", ["--dialect", "/nonexistent/d.toml", "00"], "dialect file not found"),
]


@pytest.mark.parametrize("case, args, message", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_input_is_one_line_on_stderr(tmp_path, case, args, message):
    result = isodump(*(args(tmp_path) if callable(args) else args))
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("isodump: ") and result.stderr.count("\n") == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_there_is_no_way_to_unmask():
    result = isodump("--dialect", "iso87ascii", "--unmasked", PUBLIC_VECTOR)
    assert result.returncode == 2 and "unrecognized arguments: --unmasked" in result.stderr


def test_any_bytes_give_a_dump_or_a_dump_error():
    dialects = [load_dialect(n) for n in ("iso87ascii", "iso87binary", "iso93ascii", "iso93binary")]
    framing = Framing("2b")

    @settings(max_examples=300, deadline=None)
    @given(data=st.binary(max_size=80), which=st.integers(0, 3), framed=st.booleans())
    def check(data, which, framed):
        try:
            dump(parse_hex(data.hex()), dialects[which], framing if framed else None)
        except DumpError:
            pass

    check()
