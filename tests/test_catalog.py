"""The catalog: YAML datasets, search path, site rules and located errors."""

from __future__ import annotations

import textwrap

import pytest

import casa_data
from casa_data.catalog import Catalog, get_catalog
from casa_data.errors import CatalogError, DatasetNotFoundError


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def test_builtin_demo_catalog_is_on_the_search_path(casa_env):
    cat = get_catalog()
    assert {"demo/zmumu", "demo/zmumu-parquet"} <= set(cat.names())
    assert cat.origin("demo/zmumu").name == "demo.yaml"


def test_search_path_explicit_env_and_user_dir(casa_env, monkeypatch):
    a = write(casa_env / "a.yaml", "datasets: [{name: x/a, files: [/tmp/a.root]}]\n")
    b = write(casa_env / "envcat" / "b.yaml", "datasets: [{name: x/b, files: [/tmp/b.root]}]\n")
    c = write(casa_env / "config" / "casa" / "catalogs" / "c.yml", "datasets: [{name: x/c, files: [/tmp/c.root]}]\n")
    monkeypatch.setenv("CASA_CATALOG", str(b.parent))
    cat = get_catalog(a)
    assert {"x/a", "x/b", "x/c", "demo/zmumu"} <= set(cat.names())
    assert cat.files.index(a) < cat.files.index(b) < cat.files.index(c)


def test_missing_explicit_catalog_is_an_error(casa_env):
    with pytest.raises(CatalogError, match="does-not-exist.yaml does not exist"):
        get_catalog(casa_env / "does-not-exist.yaml")


def test_duplicate_dataset_names_name_both_files(casa_env):
    a = write(casa_env / "one.yaml", "datasets: [{name: dup/x, files: [/tmp/a.root]}]\n")
    b = write(casa_env / "two.yaml", "datasets: [{name: dup/x, files: [/tmp/b.root]}]\n")
    with pytest.raises(CatalogError) as err:
        Catalog([a, b])
    assert "dup/x" in str(err.value) and str(a) in str(err.value) and str(b) in str(err.value)


def test_malformed_yaml_names_file_and_line(casa_env):
    bad = write(casa_env / "bad.yaml", """\
        datasets:
          - name: ok/one
            files: [/tmp/a.root]
          - name: [unclosed
            files: x
        """)
    with pytest.raises(CatalogError) as err:
        Catalog([bad])
    assert f"{bad}:" in str(err.value)
    line = int(str(err.value).split(f"{bad}:")[1].split(":")[0])
    assert line in (4, 5, 6)


def test_invalid_field_points_at_its_line(casa_env):
    bad = write(casa_env / "bad.yaml", """\
        datasets:
          - name: ok/one
            files: [/tmp/a.root]
          - name: ok/two
            formt: root
            files: [/tmp/b.root]
        """)
    with pytest.raises(CatalogError) as err:
        Catalog([bad])
    assert f"{bad}:5:" in str(err.value) and "formt" in str(err.value)


def test_bad_format_and_empty_files_are_reported(casa_env):
    bad = write(casa_env / "bad.yaml", """\
        datasets:
          - name: ok/one
            format: csv
            files: []
        """)
    with pytest.raises(CatalogError) as err:
        Catalog([bad])
    text = str(err.value)
    assert f"{bad}:3:" in text and "format" in text and "files" in text


def test_unknown_dataset_suggests_close_names(casa_env):
    with pytest.raises(DatasetNotFoundError) as err:
        casa_data.open("demo/zmumm")
    assert "demo/zmumu" in err.value.suggestions
    assert "did you mean" in str(err.value)


def test_relative_paths_and_globs_resolve_against_the_catalog_file(casa_env):
    data = casa_env / "files"
    for i in range(3):
        write(data / f"f{i}.root", "x")
    cat = write(casa_env / "cats" / "rel.yaml", """\
        datasets:
          - name: rel/glob
            files: ["../files/f*.root"]
          - name: rel/plain
            files: [{lfn: /store/x/f0.root, replicas: [../files/f0.root]}]
        """)
    ds = casa_data.open("rel/glob", catalog=cat)
    assert ds.files == [str(data / f"f{i}.root") for i in range(3)]
    ds = casa_data.open("rel/plain", catalog=cat)
    assert ds.files == [str(data / "f0.root")]
    assert ds.resolved[0].lfn == "/store/x/f0.root"


def test_glob_matching_nothing_is_an_error(casa_env):
    cat = write(casa_env / "g.yaml", "datasets: [{name: g/none, files: ['/nonexistent-dir/*.root']}]\n")
    with pytest.raises(CatalogError, match="matches no file"):
        casa_data.open("g/none", catalog=cat)


def test_site_rules_rewrite_lfns_before_catalog_replicas(casa_env, monkeypatch):
    cfg = write(casa_env / "site.yaml", f"""\
        site: mysite
        sites:
          mysite:
            prefer: [local]
            rules:
              - {{prefix: /store/, url: "{casa_env}/mirror/", via: local}}
        """)
    monkeypatch.setenv("CASA_CONFIG", str(cfg))
    casa_data.reset_config()
    cat = write(casa_env / "c.yaml", """\
        datasets:
          - name: s/x
            files:
              - {lfn: /store/data/a.root, replicas: [/elsewhere/a.root]}
        """)
    ds = casa_data.open("s/x", catalog=cat)
    assert [c.url for c in ds.resolved[0].candidates] == [f"{casa_env}/mirror/data/a.root", "/elsewhere/a.root"]


def test_via_without_a_matching_replica_says_what_exists(casa_env):
    with pytest.raises(casa_data.errors.CasaError, match="no replica deliverable via 'xcache'"):
        casa_data.open("demo/zmumu", via="xcache")


def test_unknown_site_in_config_is_reported(casa_env, monkeypatch):
    monkeypatch.setenv("CASA_SITE", "atlantis")
    casa_data.reset_config()
    with pytest.raises(CatalogError, match="site 'atlantis' is not configured"):
        casa_data.open("demo/zmumu")
