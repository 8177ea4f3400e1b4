import re
from pathlib import Path

README = (Path(__file__).parent.parent / "README.md").read_text()


def test_python_api_example_runs():
    section = README.split("## Python API", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    exec(compile(code, "README.md", "exec"), {})
