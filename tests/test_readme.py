"""Every python and bash block of README.md runs, as written, in the README's order.

The blocks run as a user going through the README would run them: one after
the other in one working directory, so later blocks use what earlier ones
wrote (the SavedModel that `bilm export` writes, the corpus shards, the
checkpoints, the dumped model). That directory links to everything at the
repository root (bin/, examples/, scripts/, the package ...), as the README
assumes commands run from there, and holds the one file the README asks the
user to bring: `corpus.txt`, here a small generated corpus.

- bash blocks run with `bash -euo pipefail`; python blocks in a fresh
  interpreter (the README's graph-mode and eager snippets must not share one).
- A python statement ending in `# prints: TEXT` states the line it prints:
  the block's output must be exactly those lines, in order, so the README's
  shapes are the real ones.
- A block right after `<!-- readme-test: skip (REASON) -->` is skipped and
  the reason shown (pytest.ini adds `-rs`): installing packages, the
  full-size model (GPUs), several machines, and the local cluster launcher,
  which tests/test_distributed.py runs.

A block that fails may make later blocks fail too; read the first failure.
"""
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import List, NamedTuple, Optional

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RUNNABLE = ("python", "bash")
SKIP_MARKER = re.compile(r"<!--\s*readme-test:\s*skip\s*\((?P<reason>.+)\)\s*-->")
PRINTS = re.compile(r"#\s*prints:\s*(?P<text>.*?)\s*$")
BLOCK_TIMEOUT = 300


class Block(NamedTuple):
    line: int                   # 1-based line of the opening fence
    language: str
    code: str
    skip_reason: Optional[str]

    @property
    def expected_output(self) -> List[str]:
        return [m.group("text") for m in map(PRINTS.search, self.code.splitlines()) if m]


def readme_blocks(text: str, source: str = "README.md") -> List[Block]:
    """The fenced code blocks of a Markdown text, with their skip markers."""
    lines = text.splitlines()
    blocks, previous, k = [], "", 0
    while k < len(lines):
        line = lines[k].strip()
        fence = re.fullmatch(r"```(\S*)", line)
        if fence is None:
            if "readme-test" in line and not SKIP_MARKER.fullmatch(line):
                raise ValueError(f"{source}, line {k + 1}: malformed marker {line!r}; "
                                 "write <!-- readme-test: skip (REASON) -->")
            if "readme-test" in previous and line and "readme-test" not in line:
                raise ValueError(f"{source}, line {k}: a readme-test marker must be "
                                 "followed by a code block")
            previous = line or previous
            k += 1
            continue
        end = next((j for j in range(k + 1, len(lines)) if lines[j].strip() == "```"), None)
        if end is None:
            raise ValueError(f"{source}, line {k + 1}: code block is never closed")
        language = fence.group(1)
        if language not in RUNNABLE + ("text",):
            raise ValueError(f"{source}, line {k + 1}: code block language "
                             f"{language or '(none)'!r}; use python, bash or text")
        marker = SKIP_MARKER.fullmatch(previous)
        blocks.append(Block(k + 1, language, "\n".join(lines[k + 1:end]) + "\n",
                            marker.group("reason") if marker else None))
        previous, k = "", end + 1
    return blocks


BLOCKS = [block for block in readme_blocks(README.read_text(encoding="utf-8"))
          if block.language in RUNNABLE]


# ---------------------------------------------------------------------------
# The extractor
# ---------------------------------------------------------------------------

def test_extractor():
    text = ("# Title\n\n```bash\necho one\n```\n\n"
            "<!-- readme-test: skip (needs a GPU) -->\n\n```python\nprint(2)  # prints: 2\n```\n"
            "```text\nnot run\n```\n")
    blocks = readme_blocks(text)
    assert blocks == [Block(3, "bash", "echo one\n", None),
                      Block(9, "python", "print(2)  # prints: 2\n", "needs a GPU"),
                      Block(12, "text", "not run\n", None)]
    assert blocks[1].expected_output == ["2"]
    with pytest.raises(ValueError, match="line 2: malformed marker"):
        readme_blocks("x\n<!-- readme-test: skip -->\n```bash\nls\n```\n")
    with pytest.raises(ValueError, match="line 1: a readme-test marker must be followed"):
        readme_blocks("<!-- readme-test: skip (GPU) -->\nSome text.\n```bash\nls\n```\n")
    with pytest.raises(ValueError, match="line 1: code block is never closed"):
        readme_blocks("```bash\nls\n")
    with pytest.raises(ValueError, match="line 1: code block language 'sh'"):
        readme_blocks("```sh\nls\n```\n")


def test_readme_has_the_blocks_it_should():
    """Guards the extractor against silently finding nothing."""
    languages = [block.language for block in BLOCKS]
    assert languages.count("python") >= 5 and languages.count("bash") >= 5
    skipped = [block for block in BLOCKS if block.skip_reason]
    assert 0 < len(skipped) <= 8, [block.line for block in skipped]


# ---------------------------------------------------------------------------
# The README's blocks
# ---------------------------------------------------------------------------

def write_corpus(path: Path, n_sentences: int = 2000) -> None:
    """A tokenized corpus with a simple grammar: ~9k tokens, 45 word types,
    enough heldout sentences (1%) for the README's run_test batch of 16."""
    rng = random.Random(0)
    nouns = ("cats dogs birds fish horses teachers students farmers doctors children "
             "rivers banks cities houses gardens trees roads books letters songs").split()
    verbs = "see like find follow watch help call know visit paint need love".split()
    adverbs = "often rarely never always sometimes quietly".split()
    with open(path, "w", encoding="utf-8") as fout:
        for _ in range(n_sentences):
            words = [rng.choice(nouns), rng.choice(verbs), rng.choice(nouns)]
            if rng.random() < 0.3:
                words.insert(1, rng.choice(adverbs))
            fout.write(" ".join(words + ["."]) + "\n")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("readme")
    for entry in ROOT.iterdir():
        if not entry.name.startswith("."):
            (folder / entry.name).symlink_to(entry)
    write_corpus(folder / "corpus.txt")
    return folder


@pytest.fixture(scope="module")
def durations():
    seconds = {}
    yield seconds
    print("README blocks, seconds: " + ", ".join(f"line {line}: {s:.1f}"
                                                 for line, s in seconds.items())
          + f"; total {sum(seconds.values()):.1f}")


def _environment() -> dict:
    # `python` and `bilm` are the ones of the interpreter running the tests
    path = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    return dict(os.environ, PATH=path, TF_CPP_MIN_LOG_LEVEL="2")


@pytest.mark.parametrize("block", BLOCKS, ids=[f"line{b.line}-{b.language}" for b in BLOCKS])
def test_readme_block(block: Block, workdir: Path, durations: dict):
    if block.skip_reason:
        pytest.skip(f"README.md line {block.line}: {block.skip_reason}")
    if block.language == "python":
        script = workdir / f"readme_line{block.line}.py"
        script.write_text(block.code, encoding="utf-8")
        command = [sys.executable, script.name]
    else:
        command = ["bash", "-euo", "pipefail", "-c", block.code]
    start = time.monotonic()
    result = subprocess.run(command, cwd=workdir, env=_environment(), capture_output=True,
                            text=True, timeout=BLOCK_TIMEOUT)
    durations[block.line] = time.monotonic() - start
    assert result.returncode == 0, (f"README.md line {block.line} failed "
                                    f"(exit {result.returncode}):\n{result.stderr[-3000:]}")
    if block.language == "python":
        printed = [line.rstrip() for line in result.stdout.splitlines() if line.strip()]
        assert printed == block.expected_output, (
            f"README.md line {block.line}: printed {printed}, but its '# prints:' "
            f"comments say {block.expected_output}")
