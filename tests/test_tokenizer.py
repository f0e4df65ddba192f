import numpy as np
import polars as pl
import pytest

from vecjob.errors import ArtifactError
from vecjob.tokenizer import BOS, EOS, PAD, SPECIALS, UNK, Tokenizer, Vocab, count_tokens, document_chunks, merge_counts, tokenize_column


def test_tokenize_lowercases_and_splits_punctuation():
    tokens = tokenize_column(["Hello, World! It's 2024.", None]).to_list()
    assert tokens[0] == ["hello", ",", "world", "!", "it's", "2024", "."]
    assert tokens[1] is None


def test_chinese_characters_and_kana_are_tokens_of_their_own_and_version_2_keeps_its_runs():
    texts = ["我们去北京看比赛了。", "日本語のテキスト", "abc中文def it's", "Привет, мир!", "한국어 텍스트"]
    assert tokenize_column(texts).to_list() == [
        ["我", "们", "去", "北", "京", "看", "比", "赛", "了", "。"], ["日", "本", "語", "の", "テ", "キ", "ス", "ト"],
        ["abc", "中", "文", "def", "it's"], ["привет", ",", "мир", "!"], ["한국어", "텍스트"]]  # Hangul is spaced
    assert tokenize_column(texts, version=2).to_list()[:3] == [["我们去北京看比赛了", "。"], ["日本語のテキスト"],
                                                               ["abc中文def", "it's"]]
    vocab = Vocab.from_counts(count_tokens(["北京 abc", "北京 def"]), 20, 1)
    assert Tokenizer(vocab, 8, version=2).encode(pl.Series(["北京"]))[0].tolist() == [UNK]  # a model of version 2
    assert [vocab.tokens[i] for i in Tokenizer(vocab, 8).encode(pl.Series(["北京"]))[0]] == ["北", "京"]


def test_one_word_typed_two_ways_or_with_invisible_characters_is_one_token_and_version_3_keeps_its_cut():
    composed, decomposed = "caf\u00e9", "cafe\u0301"  # what macOS file names and some editors write
    texts = [f"{composed} {decomposed}", "inter\u00adnational", "zero\u200bwidth", "\ufeffstart \u200eltr\u200f"]
    assert tokenize_column(texts).to_list() == [[composed, composed], ["international"], ["zero", "width"],
                                                ["start", "ltr"]]
    assert tokenize_column(texts, version=3).to_list()[:2] == [[composed, decomposed], ["inter", "\u00ad", "national"]]
    vocab = Vocab.from_counts(count_tokens(["international café"] * 2), 20, 1)
    assert UNK not in Tokenizer(vocab, 8).encode(pl.Series(["inter\u00adnational cafe\u0301"]))[0].tolist()


def test_full_width_letters_ligatures_and_typographic_apostrophes_are_the_plain_ones_and_version_5_keeps_its_cut():
    texts = ["ｉＰｈｏｎｅ ２０２６", "the \ufb01nal \u2122", "don\u2019t \u2018quoted\u2019 \u201cquoted\u201d", "50\u00a0km"]
    assert tokenize_column(texts).to_list() == [["iphone", "2026"], ["the", "final", "tm"],
                                                ["don't", "'", "quoted", "'", '"', "quoted", '"'], ["50", "km"]]
    assert tokenize_column(texts, version=5).to_list()[:3] == [["ｉｐｈｏｎｅ", "２０２６"], ["the", "\ufb01nal", "\u2122"],
                                                               ["don", "\u2019", "t", "\u2018", "quoted", "\u2019",
                                                                "\u201c", "quoted", "\u201d"]]
    vocab = Vocab.from_counts(count_tokens(["don't use the final iphone"] * 2), 20, 1)
    assert UNK not in Tokenizer(vocab, 8).encode(pl.Series(["DON\u2019T use the \ufb01nal ｉＰｈｏｎｅ"]))[0].tolist()


def test_thai_lao_khmer_and_burmese_are_cut_into_characters_with_their_marks_and_version_4_keeps_its_runs():
    # Written without spaces between words: one run per phrase was one token that never came again.
    texts = ["ภาษาไทยเป็นภาษา iPhone ราคา", "ພາສາລາວ", "ភាសាខ្មែរ", "မြန်မာဘာသာ"]
    assert tokenize_column(texts).to_list() == [
        ["ภ", "า", "ษ", "า", "ไ", "ท", "ย", "เ", "ป็", "น", "ภ", "า", "ษ", "า", "iphone", "ร", "า", "ค", "า"],
        ["ພ", "າ", "ສ", "າ", "ລ", "າ", "ວ"], ["ភា", "សា", "ខ្", "មែ", "រ"], ["မြ", "န်", "မာ", "ဘာ", "သာ"]]
    assert tokenize_column(texts, version=4).to_list()[0] == ["ภาษาไทยเป็นภาษา", "iphone", "ราคา"]
    # A new sentence reads as known tokens, where version 4 knows none of its runs.
    training, unseen = ["ภาษาไทยเป็นภาษา", "ประเทศไทยใหญ่"], pl.Series(["ไทยเป็นประเทศ"])
    for version, known in ((5, True), (4, False)):
        counts = tokenize_column(training, version).explode().rename("token").value_counts(name="count")
        vocab = Vocab.from_counts(counts, 200, 1)
        assert (UNK not in Tokenizer(vocab, 64, version=version).encode(unseen)[0].tolist()) is known


def test_urls_become_one_token_and_html_entities_are_unescaped():
    # Tweets: a t.co link would otherwise be ~8 tokens of "http : / / t . co /" and an unknown id.
    tokens = tokenize_column(["Read http://t.co/AbC9x now &amp; HTTPS://example.com/a?b=1!", "R&amp;D &lt;3 www.bbc.co.uk", "Google&amp;#39;s"])
    assert tokens.to_list() == [
        ["read", "<url>", "now", "&", "<url>"],
        ["r", "&", "d", "<", "3", "www", ".", "bbc", ".", "co", ".", "uk"],
        ["google's"],  # doubly escaped, as scraped tweets often are
    ]


def test_vocab_orders_by_count_then_token_and_applies_min_count():
    counts = merge_counts([count_tokens(["b b a c", "a b"]), count_tokens(["d"])])
    vocab = Vocab.from_counts(counts, max_size=10, min_count=2)
    assert vocab.tokens == SPECIALS + ("b", "a")  # c and d occur once
    assert vocab.counts[4:] == (3, 2)
    assert (PAD, UNK, BOS, EOS) == (0, 1, 2, 3)


def test_topic_words_are_words_of_two_characters_or_more_and_the_characters_of_unspaced_scripts():
    text = "The cat, a dog! 2 cats; I'm 42 北京 ไทย http://t.co/x 🙂 x"
    vocab = Vocab.from_counts(count_tokens([text]), 100, 1)
    words = {token for token, topical in zip(vocab.tokens, vocab.topic_words()) if topical}
    assert words == {"the", "cat", "dog", "cats", "i'm", "42", "北", "京", "ไ", "ท", "ย", "<url>"}
    assert vocab.topic_words().shape == (len(vocab),)


def test_vocab_max_size_counts_specials():
    vocab = Vocab.from_counts(count_tokens(["a b c d e f"]), max_size=6, min_count=1)
    assert len(vocab) == 6


def test_vocab_roundtrip_keeps_every_token_a_text_can_hold(tmp_path):
    # \x1c-\x1e (ASCII file, group and record separators, found in exported text) are tokens, and
    # str.splitlines cuts lines at them: a model trained on such text once never loaded again.
    texts = ["x y y z z z", "a\x1cb\x1dc\x1ed a\x1cb\x1dc\x1ed \x00 \x7f", "北京 🙂 café"]
    vocab = Vocab.from_counts(count_tokens(texts), 100, 1)
    assert {"\x1c", "\x1d", "\x1e", "\x00", "北", "🙂"} <= set(vocab.tokens)
    vocab.save(tmp_path)
    assert Vocab.load(tmp_path) == vocab


@pytest.mark.parametrize("content", [b"hello\t3\n", b"<pad>\t0\n<unk>\t0\n<bos>\t0\n<eos>\t0\nword\tmany\n",
                                     b"<pad>\t0\n<unk>\t0\n<bos>\t0\n<eos>\t0\n\xff\xfe\t3\n", b""],
                         ids=["foreign", "a count not a number", "not utf-8", "empty"])
def test_vocab_load_rejects_a_foreign_or_damaged_file(tmp_path, content):
    (tmp_path / "vocab.tsv").write_bytes(content)
    with pytest.raises(ArtifactError, match="vocab.tsv: not a vecjob vocabulary"):
        Vocab.load(tmp_path)


def test_encode_maps_unknown_words_and_keeps_order():
    vocab = Vocab.from_counts(count_tokens(["cat sat on mat"]), 100, 1)
    tok = Tokenizer(vocab, max_len=4)
    ids = tok.encode(["mat sat dog", "", None])
    assert [vocab.tokens[i] for i in ids[0]] == ["mat", "sat", "<unk>"]
    assert len(ids[1]) == 0 and len(ids[2]) == 0
    # No texts are no documents, on every path (an input shard with no rows is encoded too).
    assert tok.encode(pl.Series([], dtype=pl.String)) == [] and tok.encode([]) == []


def test_chunks_cover_the_whole_document():
    vocab = Vocab.from_counts(count_tokens(["w"]), 10, 1)
    tok = Tokenizer(vocab, max_len=4)
    docs = [np.arange(10, dtype=np.int32), np.arange(3, dtype=np.int32), np.zeros(0, np.int32)]
    chunks, owner = document_chunks(tok, docs)
    assert [len(c) for c in chunks] == [4, 4, 2, 3]
    assert owner.tolist() == [0, 0, 0, 1]
    assert np.concatenate(chunks[:3]).tolist() == list(range(10))


def test_tokenizer_is_fast_enough_to_never_be_the_bottleneck():
    # Not a timing assertion: checks the vectorised path handles a large batch in one call.
    texts = pl.Series(["the quick brown fox jumps over the lazy dog ."] * 20_000)
    vocab = Vocab.from_counts(count_tokens(texts), 100, 1)
    ids = Tokenizer(vocab, 8).encode(texts)
    assert len(ids) == 20_000 and all(len(i) == 10 for i in ids[:5])


def test_chunk_contexts_widen_each_chunk_within_its_document():
    tok = Tokenizer(Vocab.from_counts(count_tokens(["w"]), 10, 1), max_len=4)
    ids = np.arange(10, dtype=np.int32)
    contexts = tok.chunk_contexts(ids, width=3)
    assert [c.tolist() for c in contexts] == [list(range(0, 7)), list(range(1, 10)), list(range(5, 10))]
    assert len(contexts) == len(tok.chunk(ids))
    assert tok.chunk_contexts(np.zeros(0, np.int32), 3) == []


def test_the_few_texts_path_gives_the_column_path_s_ids():
    from vecjob.tokenizer import FEW_TEXTS, Tokenizer

    texts = ["Don't stop &amp; go!", "See https://t.co/AbC?x=1 now...", "rock'n'roll & &amp;gt; 3.5 x_y",
             "  ", "", "UPPER lower 123 -- ok", "it's 'quoted' (paren) [b] {c}", "tab\tand\nnewline\r\fend"]
    counts = count_tokens(texts)
    tok = Tokenizer(Vocab.from_counts(counts, 50, 1), max_len=8)
    column = tok.encode(pl.Series(values=texts))
    few = tok.encode(texts)
    assert len(texts) <= FEW_TEXTS and len(few) == len(column)
    for a, b in zip(few, column):
        assert a.tolist() == b.tolist()
    assert tok.encode(["unseen words here"])[0].tolist() == [1, 1, 1]  # <unk>
