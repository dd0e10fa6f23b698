"""Tests of bilm.data against hand-computed ids, windows and error messages."""
import json
import random

import numpy as np
import pytest

from bilm.data import (Batcher, BidirectionalLMDataset, LMDataset,
                       TokenBatcher, UnicodeCharsVocabulary, Vocabulary,
                       _get_batch)

BOW, EOW, PAD = 258, 259, 260


def chars(*ids, length=10):
    """Expected char ids: [bow, ids..., eow] padded to `length`."""
    return np.array([BOW, *ids, EOW] + [PAD] * (length - len(ids) - 2), np.int32)


def write(path, text):
    path.write_text(text, encoding='utf-8')
    return str(path)


@pytest.fixture
def vocab_file(tmp_path):
    # ids: <S>=0 </S>=1 <UNK>=2 a=3 b=4 c=5 d=6 e=7
    return write(tmp_path / 'vocab.txt', '<S>\n</S>\n<UNK>\na\nb\nc\nd\ne\n')


@pytest.fixture
def corpus(tmp_path):
    """One shard of four sentences; 'x' is not in the vocabulary."""
    return write(tmp_path / 'shard_0.txt', 'a b c\nd e\na\nx b\n')


# ---------------------------------------------------------------- Vocabulary

def test_vocabulary_ids_specials_and_maxtermid(tmp_path):
    path = write(tmp_path / 'v.txt', ' the \n</S>\n!!!MAXTERMID\n<S>\n<UNK>\ncat\n<s>\n')
    vocab = Vocabulary(path)
    assert vocab.size == 6
    assert (vocab.bos, vocab.eos, vocab.unk) == (2, 1, 3)
    assert vocab.word_to_id('the') == 0
    assert vocab.word_to_id('cat') == 4
    assert vocab.word_to_id('<s>') == 5  # specials are case sensitive
    assert vocab.word_to_id('dog') == 3
    assert vocab.word_to_id('!!!MAXTERMID') == 3
    assert vocab.id_to_word(4) == 'cat'
    assert vocab.decode([0, 4, 1]) == 'the cat </S>'


def test_vocabulary_encode(vocab_file):
    vocab = Vocabulary(vocab_file)
    ids = vocab.encode('a  zzz b\n')
    assert ids.dtype == np.int32
    assert ids.tolist() == [0, 3, 2, 4, 1]
    assert vocab.encode(['a', 'zzz', 'b'], split=False).tolist() == [0, 3, 2, 4, 1]
    # reverse swaps the boundaries only; token order is the caller's business
    assert vocab.encode('a b', reverse=True).tolist() == [1, 3, 4, 0]
    assert vocab.encode('').tolist() == [0, 1]


def test_vocabulary_without_specials(tmp_path):
    vocab = Vocabulary(write(tmp_path / 'v.txt', 'hello\nworld\n'))
    assert (vocab.bos, vocab.eos, vocab.unk) == (-1, -1, -1)
    assert vocab.encode('world nope').tolist() == [-1, 1, -1, -1]


def test_vocabulary_validate_file(tmp_path, vocab_file):
    Vocabulary(vocab_file, validate_file=True)
    path = write(tmp_path / 'partial.txt', '<S>\nhello\n')
    with pytest.raises(ValueError, match=r'partial\.txt.*</S>, <UNK>'):
        Vocabulary(path, validate_file=True)


# --------------------------------------------------------- character ids

def test_char_ids_ascii_unicode_and_boundaries(vocab_file):
    vocab = UnicodeCharsVocabulary(vocab_file, 10)
    assert vocab.max_word_length == 10
    np.testing.assert_array_equal(vocab.word_to_char_ids('abc'), chars(97, 98, 99))
    np.testing.assert_array_equal(vocab.word_to_char_ids('é'), chars(195, 169))
    np.testing.assert_array_equal(vocab.word_to_char_ids('日本'),
                                  chars(230, 151, 165, 230, 156, 172))
    # unencodable characters (a lone surrogate) are dropped
    np.testing.assert_array_equal(vocab.word_to_char_ids('a\ud800b'), chars(97, 98))
    np.testing.assert_array_equal(vocab.bos_chars, chars(256))
    np.testing.assert_array_equal(vocab.eos_chars, chars(257))
    assert vocab.word_char_ids.shape == (8, 10)
    assert vocab.word_char_ids.dtype == np.int32
    np.testing.assert_array_equal(vocab.word_char_ids[0], chars(256))
    np.testing.assert_array_equal(vocab.word_char_ids[1], chars(257))
    np.testing.assert_array_equal(vocab.word_char_ids[3], chars(97))
    # '<S>' in the vocabulary means the sentence boundary, not its bytes
    np.testing.assert_array_equal(vocab.word_to_char_ids('<S>'), chars(256))


def test_char_ids_truncate_to_max_length_minus_two(vocab_file):
    vocab = UnicodeCharsVocabulary(vocab_file, 6)
    np.testing.assert_array_equal(vocab.word_to_char_ids('abcdefg'),
                                  [BOW, 97, 98, 99, 100, EOW])
    # bytes are cut even inside a multibyte character, as in the original
    np.testing.assert_array_equal(vocab.word_to_char_ids('日本'),
                                  [BOW, 230, 151, 165, 230, EOW])
    np.testing.assert_array_equal(vocab.word_to_char_ids(''), [BOW, EOW] + [PAD] * 4)


def test_encode_chars(vocab_file):
    vocab = UnicodeCharsVocabulary(vocab_file, 10)
    encoded = vocab.encode_chars('a zzz')
    assert encoded.shape == (4, 10) and encoded.dtype == np.int32
    np.testing.assert_array_equal(
        encoded, [chars(256), chars(97), chars(122, 122, 122), chars(257)])
    reverse = vocab.encode_chars(['a', 'b'], reverse=True, split=False)
    np.testing.assert_array_equal(reverse, [chars(257), chars(97), chars(98), chars(256)])


def test_vocab_without_boundaries_keeps_last_word_char_ids(tmp_path):
    # The original wrote bos/eos chars into row -1, i.e. over 'world'.
    vocab = UnicodeCharsVocabulary(write(tmp_path / 'v.txt', 'hello\nworld\n'), 10)
    np.testing.assert_array_equal(vocab.word_char_ids[1], chars(119, 111, 114, 108, 100))
    np.testing.assert_array_equal(vocab.word_to_char_ids('world'),
                                  chars(119, 111, 114, 108, 100))
    np.testing.assert_array_equal(vocab.encode_chars('hello')[0], chars(256))


def test_max_word_length_too_small(vocab_file):
    with pytest.raises(ValueError, match='at least 3'):
        UnicodeCharsVocabulary(vocab_file, 2)


# ---------------------------------------------------------------- batchers

def test_batcher(vocab_file):
    batch = Batcher(vocab_file, 6).batch_sentences([['hi', 'é'], []])
    assert batch.dtype == np.int64
    assert batch.shape == (2, 4, 6)
    expected_row0 = np.array([[BOW, 256, EOW, PAD, PAD, PAD],
                              [BOW, 104, 105, EOW, PAD, PAD],
                              [BOW, 195, 169, EOW, PAD, PAD],
                              [BOW, 257, EOW, PAD, PAD, PAD]]) + 1
    np.testing.assert_array_equal(batch[0], expected_row0)
    np.testing.assert_array_equal(batch[1, 0], expected_row0[0])
    np.testing.assert_array_equal(batch[1, 1], expected_row0[3])
    np.testing.assert_array_equal(batch[1, 2:], 0)


def test_token_batcher(vocab_file, tmp_path):
    batch = TokenBatcher(vocab_file).batch_sentences([['a', 'zzz'], ['e'], []])
    assert batch.dtype == np.int64
    np.testing.assert_array_equal(batch, [[1, 4, 3, 2], [1, 8, 2, 0], [1, 2, 0, 0]])
    # no <UNK> in the vocabulary: unknown tokens get -1 + 1 = 0
    no_unk = write(tmp_path / 'no_unk.txt', '<S>\n</S>\na\n')
    np.testing.assert_array_equal(
        TokenBatcher(no_unk).batch_sentences([['a', 'zzz']]), [[1, 3, 0, 2]])


@pytest.mark.parametrize('make', [lambda f: Batcher(f, 10), TokenBatcher])
def test_batchers_reject_bad_batches(vocab_file, make):
    batcher = make(vocab_file)
    with pytest.raises(ValueError, match='at least one sentence'):
        batcher.batch_sentences([])
    with pytest.raises(TypeError, match='list of tokens'):
        batcher.batch_sentences(['a b'])


# ------------------------------------------------------------ LM datasets

def test_lm_dataset_word_windows(vocab_file, corpus):
    data = LMDataset(corpus, Vocabulary(vocab_file), test=True)
    assert data.max_word_length is None
    batches = list(data.iter_batches(batch_size=2, num_steps=3))
    # sentences: [0 3 4 5 1] [0 6 7 1] [0 3 1] [0 2 4 1]; the third batch
    # would be incomplete and is dropped
    assert len(batches) == 2
    for batch in batches:
        assert batch['tokens_characters'] is None
        assert batch['token_ids'].dtype == np.int32
        assert batch['next_token_id'].dtype == np.int32
    np.testing.assert_array_equal(batches[0]['token_ids'], [[0, 3, 4], [0, 6, 7]])
    np.testing.assert_array_equal(batches[0]['next_token_id'], [[3, 4, 5], [6, 7, 1]])
    # row 0 carries "c </S>" over, then starts sentence 3 in the same row
    np.testing.assert_array_equal(batches[1]['token_ids'], [[5, 0, 3], [0, 2, 4]])
    np.testing.assert_array_equal(batches[1]['next_token_id'], [[1, 3, 1], [2, 4, 1]])


def test_lm_dataset_reverse_windows(vocab_file, corpus):
    data = LMDataset(corpus, Vocabulary(vocab_file), reverse=True, test=True)
    batches = list(data.iter_batches(2, 3))
    # reversed sentences: [1 5 4 3 0] [1 7 6 0] [1 3 0] [1 4 2 0]
    assert len(batches) == 2
    np.testing.assert_array_equal(batches[0]['token_ids'], [[1, 5, 4], [1, 7, 6]])
    np.testing.assert_array_equal(batches[0]['next_token_id'], [[5, 4, 3], [7, 6, 0]])
    np.testing.assert_array_equal(batches[1]['token_ids'], [[3, 1, 3], [1, 4, 2]])
    np.testing.assert_array_equal(batches[1]['next_token_id'], [[0, 3, 0], [4, 2, 0]])


def test_lm_dataset_char_inputs_match_tokens(vocab_file, corpus):
    vocab = UnicodeCharsVocabulary(vocab_file, 10)
    data = LMDataset(corpus, vocab, test=True)
    assert data.max_word_length == 10
    assert data.vocab is vocab
    batches = list(data.iter_batches(2, 3))
    assert len(batches) == 2
    for batch in batches:
        assert batch['tokens_characters'].shape == (2, 3, 10)
        assert batch['tokens_characters'].dtype == np.int32
    np.testing.assert_array_equal(batches[0]['tokens_characters'][0],
                                  [chars(256), chars(97), chars(98)])
    # 'x' is <UNK> as a word id but keeps its own characters
    assert batches[1]['token_ids'][1, 1] == 2
    np.testing.assert_array_equal(batches[1]['tokens_characters'][1],
                                  [chars(256), chars(120), chars(98)])
    np.testing.assert_array_equal(batches[1]['tokens_characters'][0],
                                  [chars(99), chars(256), chars(97)])


def test_get_batch_packs_long_sentence_across_batches():
    sentence = (np.arange(10, dtype=np.int32), None)
    batches = list(_get_batch(iter([sentence]), 1, 4, None))
    # 9 inputs: two full windows, the third (1 input) is dropped
    assert len(batches) == 2
    np.testing.assert_array_equal(batches[0]['token_ids'], [[0, 1, 2, 3]])
    np.testing.assert_array_equal(batches[1]['token_ids'], [[4, 5, 6, 7]])
    np.testing.assert_array_equal(batches[1]['next_token_id'], [[5, 6, 7, 8]])
    with pytest.raises(ValueError, match='positive'):
        next(_get_batch(iter([sentence]), 1, 0, None))


def test_test_mode_visits_each_shard_once(tmp_path, vocab_file):
    write(tmp_path / 'shard_1.txt', 'b\nc\n')
    write(tmp_path / 'shard_0.txt', 'a\n')
    data = LMDataset(str(tmp_path / 'shard_*.txt'), Vocabulary(vocab_file), test=True)
    sentences = [ids.tolist() for ids, _ in data.get_sentence()]
    assert sentences == [[0, 3, 1], [0, 4, 1], [0, 5, 1]]
    # ends without RuntimeError, and stays exhausted
    assert list(data.iter_batches(1, 1)) == []


def test_test_mode_iter_batches_ends_cleanly(vocab_file, corpus):
    data = LMDataset(corpus, Vocabulary(vocab_file), test=True)
    batches = list(data.iter_batches(1, 2))
    # 4 + 3 + 2 + 3 = 12 inputs -> 6 windows of 2, sentences run across windows
    assert len(batches) == 6
    inputs = np.concatenate([b['token_ids'][0] for b in batches]).tolist()
    targets = np.concatenate([b['next_token_id'][0] for b in batches]).tolist()
    assert inputs == [0, 3, 4, 5, 0, 6, 7, 0, 3, 0, 2, 4]
    assert targets == [3, 4, 5, 1, 6, 7, 1, 3, 1, 2, 4, 1]


@pytest.mark.parametrize('shuffle', [True, False])
def test_training_mode_cycles_and_shuffles(tmp_path, vocab_file, shuffle):
    # 20 distinct sentences: a shuffle leaves them in file order with
    # probability 1/20!, so an unshuffled pass is a missing shuffle
    words = 'abcde'
    lines = [f'{x} {y}' for x in words for y in words][:20]
    shard = write(tmp_path / 'shard.txt', '\n'.join(lines) + '\n')
    vocab = Vocabulary(vocab_file)
    in_file_order = [tuple(vocab.encode(line).tolist()) for line in lines]
    random.seed(0)
    data = LMDataset(shard, vocab, shuffle_on_load=shuffle)
    generator = data.get_sentence()
    passes = [[tuple(next(generator)[0].tolist()) for _ in lines] for _ in range(3)]
    for sentences in passes:  # each pass over the one shard holds every sentence once
        assert sorted(sentences) == sorted(in_file_order)
    if shuffle:  # every pass (the shard is reloaded) in a new order
        assert all(sentences != in_file_order for sentences in passes)
        assert passes[0] != passes[1] != passes[2] != passes[0]
    else:
        assert passes == [in_file_order] * 3


def test_bidirectional_dataset(vocab_file, corpus):
    vocab = UnicodeCharsVocabulary(vocab_file, 10)
    batches = list(BidirectionalLMDataset(corpus, vocab, test=True).iter_batches(2, 3))
    forward = list(LMDataset(corpus, vocab, test=True).iter_batches(2, 3))
    reverse = list(LMDataset(corpus, vocab, reverse=True, test=True).iter_batches(2, 3))
    assert len(batches) == 2
    for batch, fwd, rev in zip(batches, forward, reverse):
        assert sorted(batch) == sorted(list(fwd) + [k + '_reverse' for k in rev])
        for key in fwd:
            np.testing.assert_array_equal(batch[key], fwd[key])
            np.testing.assert_array_equal(batch[key + '_reverse'], rev[key])
    np.testing.assert_array_equal(batches[1]['token_ids_reverse'], [[3, 1, 3], [1, 4, 2]])


# ------------------------------------------------------------- bad input

def test_missing_vocab_file(tmp_path):
    missing = str(tmp_path / 'nope.txt')
    with pytest.raises(FileNotFoundError, match='nope.txt'):
        Vocabulary(missing)
    with pytest.raises(FileNotFoundError, match='nope.txt'):
        Batcher(missing, 50)


def test_invalid_utf8_vocab_names_file_and_line(tmp_path):
    path = tmp_path / 'bad_vocab.txt'
    # past the first 8 KB, so the decoder fails in a later chunk
    path.write_bytes(b'word\n' * 5000 + b'caf\xe9\n')
    with pytest.raises(ValueError, match=r'bad_vocab\.txt, line 5001: not valid UTF-8'):
        Vocabulary(str(path))


def test_invalid_utf8_shard(tmp_path, vocab_file):
    path = tmp_path / 'bad_shard.txt'
    path.write_bytes(b'a b\n\xff c\n')
    with pytest.raises(ValueError, match=r'bad_shard\.txt, line 2'):
        LMDataset(str(path), Vocabulary(vocab_file))


def test_vocab_is_read_as_utf8(tmp_path):
    vocab = Vocabulary(write(tmp_path / 'v.txt', 'café\n日本\n'))
    assert vocab.word_to_id('日本') == 1


def test_glob_without_match(tmp_path, vocab_file):
    with pytest.raises(ValueError, match='no_such_'):
        LMDataset(str(tmp_path / 'no_such_*.txt'), Vocabulary(vocab_file))


@pytest.mark.parametrize('text', ['', '\n  \n'])
def test_empty_shard(tmp_path, vocab_file, text):
    path = write(tmp_path / 'empty_shard.txt', text)
    with pytest.raises(ValueError, match=r'empty_shard\.txt contains no tokens'):
        LMDataset(path, Vocabulary(vocab_file))


def test_empty_later_shard_fails_when_loaded(tmp_path, vocab_file):
    write(tmp_path / 's0.txt', 'a\n')
    write(tmp_path / 's1.txt', '')
    data = LMDataset(str(tmp_path / 's*.txt'), Vocabulary(vocab_file), test=True)
    with pytest.raises(ValueError, match=r's1\.txt'):
        list(data.get_sentence())


# ----------------------------------------------- reference data (optional)

def test_reference_data_vocab(tf1_fixtures):
    path = str(tf1_fixtures / 'data' / 'vocab_test.txt')
    vocab = Vocabulary(path, validate_file=True)
    assert (vocab.eos, vocab.bos, vocab.unk) == (0, 1, 2)
    assert vocab.size == 100
    assert vocab.id_to_word(3) == 'the'
    assert vocab.encode('the zzz').tolist() == [1, 3, 2, 0]
    for word_id in range(vocab.size):
        assert vocab.word_to_id(vocab.id_to_word(word_id)) == word_id


def test_reference_model_vocab(tf1_fixtures):
    path = str(tf1_fixtures / 'model' / 'vocab_test.txt')
    vocab = UnicodeCharsVocabulary(path, 50)
    assert vocab.size == 448
    assert (vocab.bos, vocab.eos, vocab.unk) == (207, 257, -1)
    np.testing.assert_array_equal(vocab.word_char_ids[vocab.bos], chars(256, length=50))
    np.testing.assert_array_equal(vocab.word_char_ids[vocab.eos], chars(257, length=50))
    # the last word keeps its own characters; '•' is read as UTF-8 (3 bytes)
    np.testing.assert_array_equal(vocab.word_char_ids[-1],
                                  chars(*b'Bulls', length=50))
    np.testing.assert_array_equal(vocab.word_to_char_ids('•'),
                                  chars(226, 128, 162, length=50))

    sentences_file = tf1_fixtures / 'model' / 'lm_embeddings_sentences.json'
    sentences = [s.split() for s in json.loads(sentences_file.read_text('utf-8'))[0]]
    batch = Batcher(path, 50).batch_sentences(sentences)
    max_len = max(len(s) for s in sentences)
    assert batch.shape == (len(sentences), max_len + 2, 50)
    assert batch.dtype == np.int64
    for k, sentence in enumerate(sentences):
        np.testing.assert_array_equal(batch[k, 0], chars(256, length=50) + 1)
        np.testing.assert_array_equal(batch[k, len(sentence) + 1], chars(257, length=50) + 1)
        np.testing.assert_array_equal(batch[k, len(sentence) + 2:], 0)
        assert batch[k, 1:len(sentence) + 1].min() >= 1
    token_batch = TokenBatcher(path).batch_sentences(sentences)
    assert token_batch.shape == (len(sentences), max_len + 2)
    assert (token_batch[:, 0] == vocab.bos + 1).all()


def test_dataset_from_a_list_of_shards(tmp_path):
    """A list of shard paths works like a glob (a cluster worker's subset)."""
    for name, text in (("a.txt", "one two\n"), ("b.txt", "three four\n"), ("c.txt", "five\n")):
        (tmp_path / name).write_text(text, encoding="utf-8")
    vocab_file = tmp_path / "vocab.voc"
    vocab_file.write_text("<S>\n</S>\n<UNK>\none\ntwo\nthree\nfour\nfive\n", encoding="utf-8")
    vocab = Vocabulary(str(vocab_file))
    data = LMDataset([str(tmp_path / "c.txt"), str(tmp_path / "a.txt")], vocab, test=True)
    seen = [vocab.decode(ids[1:-1]) for ids, _ in data.get_sentence()]
    assert seen == ["one two", "five"]
