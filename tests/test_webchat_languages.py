"""The web chat offers every language whose safety texts are complete, the browser's own chosen,
and a victim who picks one is answered in it."""

from __future__ import annotations

import re

from tests.conftest import RunningHotline


async def test_every_language_with_safety_texts_is_offered(hotline: RunningHotline) -> None:
    async def offered(accept: str) -> tuple[str, list[tuple[str, bool]]]:
        page = await (await hotline.client.get("/chat", headers={"Accept-Language": accept})).text()
        lang = re.search(r'<html lang="([^"]+)">', page)
        assert lang is not None
        options = re.findall(r'<option value="([a-z]+)" lang="[a-z]+"( selected)?>', page)
        return lang.group(1), [(code, bool(selected)) for code, selected in options]

    lang, options = await offered("vi-VN,vi;q=0.9,en;q=0.5")
    assert sorted(code for code, _ in options) == ["en", "ja", "ko", "vi", "zh"]
    assert lang == "vi" and [code for code, selected in options if selected] == ["vi"]
    page = await (await hotline.client.get("/chat")).text()
    assert "<option" in page and ">Tiếng Việt<" in page and ">中文<" in page
    for accept, expected in (
        ("fr-FR,ja;q=0.4,zh;q=0.8", "zh"),
        ("de", "ko"),
        ("", "ko"),
        ("en-US,en;q=0.9", "en"),
    ):
        lang, options = await offered(accept)
        assert lang == expected and dict(options)[expected], accept

    # Chosen, the conversation speaks it: the safety welcome in Vietnamese.
    first = await hotline.client.post(
        "/chat/api/turn", json={"token": "v" * 43, "text": "/start", "language": "vi"}
    )
    assert "Xin chào" in (await first.json())["messages"][0]["text"]
