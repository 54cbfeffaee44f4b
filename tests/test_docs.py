"""The documentation matches the code: every configuration key has a row in docs/configuration.md and every row
names a key that exists; the README stays short and its links resolve."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from pursuhint.config import Config

ROOT = Path(__file__).resolve().parents[1]
INTERNAL = {"space", "searched_defaults", "source"}  # filled by load_config, not part of the file


def documented_rows() -> set[str]:
    """The keys in the first column of docs/configuration.md's table."""
    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    return set(re.findall(r"^\| `([a-z_.]+)` \|", text, flags=re.M))


def schema_keys(model: type[BaseModel] = Config, prefix: str = "", documented: frozenset = frozenset()) -> set[str]:
    """Every dotted key of the schema; a section documented as a whole (a row for ``teacher.train``) is not
    walked into."""
    out = set()
    for name, field in model.model_fields.items():
        if name in INTERNAL:
            continue
        key = prefix + name
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel) and key not in documented:
            out |= schema_keys(ann, key + ".", documented)
        else:
            out.add(key)
    return out


def test_every_configuration_key_is_documented_and_every_row_is_a_key():
    rows = documented_rows()
    keys = schema_keys(documented=frozenset(rows))
    assert keys - rows == set(), f"keys without a row in docs/configuration.md: {sorted(keys - rows)}"
    assert rows - keys == set(), f"rows for keys the schema does not have: {sorted(rows - keys)}"
    assert {"search.confirm.seeds", "search.confirm.margin", "search.confirm.budget_hours"} <= rows


def test_the_check_would_catch_a_new_key():
    class Extra(BaseModel):
        brand_new: int = 0

    assert "brand_new" in schema_keys(Extra) - documented_rows()


def test_the_readme_fits_on_two_screens_and_its_links_resolve():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 150
    links = re.findall(r"\]\(([^)#]+)\)", text)
    assert {"docs/guide.md", "docs/configuration.md", "docs/images/layer_atlas.png"} <= set(links)
    for link in links:
        assert (ROOT / link).exists(), link


def test_the_architecture_page_names_every_module():
    """docs/architecture.md lists every module of the package (by file name, under its package's row)."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    package = ROOT / "pursuhint"
    missing = [str(p.relative_to(package)) for p in sorted(package.rglob("*.py"))
               if p.name != "__init__.py" and f"`{p.name}`" not in text and f"`{p.parent.name}/{p.name}`" not in text]
    assert not missing, f"modules docs/architecture.md does not name: {missing}"
