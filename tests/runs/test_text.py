"""Code-fence extraction: the regex's results, in time linear in the message."""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agir_retrain.tasks.runs.text import extract_code, parse_tag

# The pattern extraction used to be (quadratic on hostile input); kept as the reference
# for what the linear scanner must return.
REFERENCE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\r?\n(.*?)```", re.DOTALL | re.IGNORECASE)


def reference(message: str) -> str | None:
    match = REFERENCE.search(message)
    return match.group(1) if match else None


class TestExtractCode:
    def test_fences(self):
        assert extract_code("```python\nprint(1)\n```") == "print(1)\n"
        assert extract_code("text\n```py\nx = 2\n```\nmore") == "x = 2\n"
        assert extract_code("``` PYTHON3 \r\nx\n```") == "x\n"
        assert extract_code("```\nplain\n```") == "plain\n"
        assert extract_code("```pyx\nno\n``` then ```python\nyes\n```") == "yes\n"
        assert extract_code("```python\nunclosed") is None
        assert extract_code("no fence") is None

    # Fences, language names, blanks and newlines in every order: the scanner and the
    # regex must agree on all of them.
    @given(
        st.lists(
            st.sampled_from(
                ["```", "``", "`", "python", "Python3", "py", "pyx", " ", "\t", "\n", "\r", "x"]
            ),
            max_size=30,
        ).map("".join)
    )
    def test_agrees_with_the_regex(self, message):
        assert extract_code(message) == reference(message)

    @pytest.mark.parametrize(
        "unit",
        [
            "``` " * 4,  # openings whose header never ends in a newline
            "```" + " " * 64,  # one opening followed by a long run of blanks
            "```python\n",  # openings with no closing fence
        ],
    )
    def test_hostile_messages_take_linear_time(self, unit):
        # The regex needed 0.88 s for "```" + 16k spaces, four times as long for each doubling;
        # a 1 MB message of such text took hours. Time grows linearly now: 4x the input may
        # take 4x the time (8x allowed for noise), not 16x.
        def seconds(size: int) -> float:
            message = "```" + unit * (size // len(unit))
            start = time.perf_counter()
            extract_code(message)
            return time.perf_counter() - start

        small, large = seconds(256 << 10), seconds(1 << 20)
        assert large < 1.0
        assert large < 8 * small + 0.05

    def test_one_long_blank_header(self):
        start = time.perf_counter()
        assert extract_code("```" + " " * (1 << 20)) is None
        assert time.perf_counter() - start < 1.0


def test_parse_tag():
    assert parse_tag("genned_strat_code(success)") == ("genned_strat_code", ("success",))
    assert parse_tag("get_strats_req_plist(qwen)") == ("get_strats_req_plist", ("qwen",))
    assert parse_tag("get_special_egc_req_plist,qwen") == ("get_special_egc_req_plist", ())
