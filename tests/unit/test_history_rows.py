"""What a history row says of a failure: one short line, no raw URL, no HTML entity."""

from __future__ import annotations

from flows._publish import short_reason


def test_a_reason_is_one_short_line_without_urls_or_entities() -> None:
    exc = RuntimeError(
        "PutObject on s3://dr-workload-optimization-backups/repo/keys/x.json failed &amp; "
        "the endpoint https://s3.ap-northeast-2.amazonaws.com:443/path?x=1 said\nAccessDenied"
    )
    reason = short_reason(exc)
    assert reason == (
        "PutObject on dr-workload-optimization-backups failed & the endpoint "
        "s3.ap-northeast-2.amazonaws.com:443 said AccessDenied"
    )
    long = short_reason(ValueError("x" * 1000))
    assert len(long) == 240 and long.endswith("…")
    assert short_reason(KeyError()) == "KeyError"
