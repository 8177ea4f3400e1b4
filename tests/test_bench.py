"""nacrith bench: which kept rows a --resume reuses."""

from nacrith.bench import _header, ablation, parse_config

COMMON = parse_config("engine=torch,context=2048,slide=512,chunk_tokens=4096,lanes=64,table_bits=14")[1]


def test_rows_from_before_a_setting_existed_still_match_where_it_is_off():
    configs = {label: {**cfg, **COMMON} for label, cfg in ablation("torch")}
    # what a file of the "LLM only" row stored before ctx_bias existed (no such field)
    old = {"chunk_bytes": 8192, "chunk_tokens": 4096, "context": 2048, "frame_bytes": 16777216, "lanes": 64,
           "logit_bits": 16, "precision": 24, "schedule": 2, "slide": 512, "table_bits": 14}
    # balanced chunks (setting 19) became the default after those rows: they match only with it off
    assert _header({**configs["LLM only"], "balance": 0}) == old
    assert _header(configs["LLM only"]) == {**old, "balance": 1}
    assert _header(configs["+ context bias"]) != old
    assert _header(configs["+ context bias"])["ctx_bias"] == configs["+ context bias"]["ctx_bias"]
    # a setting left out takes the engine's default, as in the files it makes
    assert _header({"engine": "llama"})["ctx_bias"] == 10000
