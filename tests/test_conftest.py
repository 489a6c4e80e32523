"""conftest's helpers, which every end-to-end test reports its failures through."""
import pytest

from conftest import run_tool


def test_a_failed_tool_run_names_its_error_first():
    # CI may list only the start of a long failure message: the cause must be there.
    code = 'print("step 1"); raise OSError(28, "No space left on device")'
    with pytest.raises(AssertionError) as failure:
        run_tool(['-c', code])
    first, command, *rest = str(failure.value).splitlines()
    assert first == 'exit 1: OSError: [Errno 28] No space left on device'
    assert command.endswith(f'-c {code}')
    assert 'step 1' in rest and 'Traceback (most recent call last):' in rest
