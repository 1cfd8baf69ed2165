"""``kiln serve``'s options are generated from the settings: every setting has a flag with
help, in a group, and the flags parse back into the settings."""

from __future__ import annotations

from kiln.cli.main import build_parser
from kiln.cli.serve import options, settings_values
from kiln.serve.settings import GROUPS, ServerSettings


def test_every_setting_is_an_option_with_help() -> None:
    listed = {name for name, _, _, _ in options()}
    assert listed == set(ServerSettings.model_fields)
    for name, cli, flags, kwargs in options():
        assert cli.group in GROUPS, name
        assert flags and all(f.startswith("--") for f in flags), name
        assert len(kwargs["help"]) > 20, name
    help_text = _help()
    for flag in ("--http-max-connections", "--max-json-depth", "--max-tensor-rank",
                 "--max-tensor-elements", "--address-file", "--http-max-input-size"):
        assert flag in help_text


def _help() -> str:
    parser = build_parser()
    serve = next(a for a in parser._subparsers._group_actions
                 if a.dest == "command").choices["serve"]
    return str(serve.format_help())


def test_options_parse_into_settings() -> None:
    args = build_parser().parse_args([
        "serve", "--http-max-connections", "7", "--max-tensor-rank=3", "--insecure",
        "--allow-grpc", "false", "--load-model", "a", "--load-model", "b"])
    settings = ServerSettings.build(**settings_values(args))
    assert (settings.http_max_connections, settings.max_tensor_rank) == (7, 3)
    assert settings.insecure and not settings.allow_grpc and settings.load_model == ["a", "b"]
