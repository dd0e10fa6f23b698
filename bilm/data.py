"""Vocabularies, character ids, batchers and language-model datasets.

This module needs only numpy: it turns text into the integer arrays the
TensorFlow graphs consume, so it can be used and tested without TensorFlow.

Prediction:
  - ``Batcher``: token lists -> int64 char ids [n, max_len + 2, max_chars],
    every id shifted +1 so that 0 means "no token".
  - ``TokenBatcher``: token lists -> int64 word ids [n, max_len + 2], +1.
Training:
  - ``LMDataset`` / ``BidirectionalLMDataset``: shards of text (one
    pre-tokenised sentence per line) -> dicts of int32 [batch, num_steps]
    windows, ids NOT shifted.

Files and errors:
  - Every vocabulary and data file is read as UTF-8 (not the platform's
    default encoding). Invalid UTF-8 is an error, never silently replaced:
    a ``ValueError`` names the file and the (1-based) line that is not valid.
  - A missing vocabulary file raises ``FileNotFoundError`` naming the path; a
    glob matching no file and a shard with no tokens raise ``ValueError``
    naming the pattern or the shard; ``batch_sentences([])`` raises
    ``ValueError``. An empty sentence ``[]`` is fine (just <S> </S>).
  - Shards are globbed in sorted order; in test mode they are read in that
    order, each exactly once, and iteration then ends (the original raised
    StopIteration inside a generator, a RuntimeError on Python >= 3.7).
  - Blank lines of a shard are kept as sentences "<S> </S>", as in the original.
  - ``shard=(index, count)`` keeps lines index, index + count, ... of every
    file (workers of a cluster that has fewer files than workers); a file
    that leaves a shard no tokens raises ``ValueError`` naming it.
  - A vocabulary without <S> or </S> no longer overwrites the char ids of its
    last word with the boundary char ids (the original indexed row -1).
"""
import glob
import logging
import numbers
import random
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

logger = logging.getLogger(__name__)

Sentence = Union[str, Sequence[str]]
# (word ids [n + 2] int32, char ids [n + 2, max_word_length] int32 or None)
EncodedSentence = Tuple[np.ndarray, Optional[np.ndarray]]


def _first_invalid_utf8_line(filename: str) -> int:
    """1-based number of the first line of `filename` that is not UTF-8."""
    with open(filename, 'rb') as f:
        for line_number, raw_line in enumerate(f, start=1):
            try:
                raw_line.decode('utf-8', errors='strict')
            except UnicodeDecodeError:
                return line_number
    return 0  # not reached for a file that failed to decode


def _read_lines(filename: str) -> List[str]:
    """All lines of a UTF-8 text file; ValueError naming the line if invalid."""
    try:
        with open(filename, encoding='utf-8', errors='strict') as f:
            return f.readlines()
    except UnicodeDecodeError as err:
        line_number = _first_invalid_utf8_line(filename)
        raise ValueError(
            f"{filename}, line {line_number}: not valid UTF-8 ({err.reason}); "
            "vocabulary and data files must be UTF-8 encoded") from None


def iter_tokenized_lines(filename: str) -> Iterator[List[str]]:
    """Stream the whitespace-split tokens of each line of a UTF-8 file.

    An empty line gives []. Invalid UTF-8 raises ValueError naming the line.
    """
    with open(filename, 'rb') as f:
        for line_number, raw_line in enumerate(f, start=1):
            try:
                yield raw_line.decode('utf-8', errors='strict').split()
            except UnicodeDecodeError as err:
                raise ValueError(
                    f"{filename}, line {line_number}: not valid UTF-8 "
                    f"({err.reason}); text files must be UTF-8 encoded") from None


def _check_sentences(sentences: Sequence[Sequence[str]]) -> None:
    if len(sentences) == 0:
        raise ValueError("batch_sentences needs at least one sentence, got []")
    for k, sentence in enumerate(sentences):
        if isinstance(sentence, str):
            raise TypeError(f"sentence {k} is a string ({sentence!r}); each "
                            "sentence must be a list of tokens")


class Vocabulary(object):
    """A token vocabulary: maps tokens to ids and encodes sentences.

    The file holds one token per line (line-stripped); lines equal to
    ``!!!MAXTERMID`` are skipped. ``<S>``, ``</S>`` and ``<UNK>`` (case
    sensitive) give the ids ``bos``, ``eos`` and ``unk``; each is -1 when the
    file lacks it.
    """

    def __init__(self, filename: str, validate_file: bool = False):
        """Read `filename`; with `validate_file`, require <S>, </S>, <UNK>."""
        self._id_to_word: List[str] = []
        self._word_to_id: Dict[str, int] = {}
        self._bos = self._eos = self._unk = -1
        try:
            lines = _read_lines(filename)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"vocabulary file not found: {filename}") from None

        for line in lines:
            word = line.strip()
            if word == '!!!MAXTERMID':
                continue
            idx = len(self._id_to_word)
            if word == '<S>':
                self._bos = idx
            elif word == '</S>':
                self._eos = idx
            elif word == '<UNK>':
                self._unk = idx
            self._id_to_word.append(word)
            self._word_to_id[word] = idx

        if validate_file:
            missing = [token for token, idx in
                       (('<S>', self._bos), ('</S>', self._eos),
                        ('<UNK>', self._unk)) if idx == -1]
            if missing:
                raise ValueError(
                    f"vocabulary file {filename} lacks the special token(s) "
                    f"{', '.join(missing)}; add each on a line of its own")

    @property
    def bos(self) -> int:
        return self._bos

    @property
    def eos(self) -> int:
        return self._eos

    @property
    def unk(self) -> int:
        return self._unk

    @property
    def size(self) -> int:
        return len(self._id_to_word)

    def word_to_id(self, word: str) -> int:
        """Id of `word`, or `unk` if it is not in the vocabulary."""
        return self._word_to_id.get(word, self._unk)

    def id_to_word(self, cur_id: int) -> str:
        return self._id_to_word[cur_id]

    def decode(self, cur_ids: Sequence[int]) -> str:
        """Ids -> their tokens joined by single spaces."""
        return ' '.join(self.id_to_word(cur_id) for cur_id in cur_ids)

    def encode(self, sentence: Sentence, reverse: bool = False,
               split: bool = True) -> np.ndarray:
        """Sentence -> int32 [n_tokens + 2]: [bos] + ids + [eos].

        `sentence` is a whitespace-separated string (split=True) or a list of
        tokens (split=False). With `reverse` the boundaries swap to
        [eos] + ids + [bos]; the tokens themselves are NOT reversed (the
        caller passes an already reversed sentence).
        """
        tokens = sentence.split() if split else sentence
        word_ids = [self.word_to_id(token) for token in tokens]
        first, last = (self._eos, self._bos) if reverse else (self._bos, self._eos)
        return np.array([first] + word_ids + [last], dtype=np.int32)


class UnicodeCharsVocabulary(Vocabulary):
    """A vocabulary that also maps tokens to arrays of character ids.

    A token's char ids are its UTF-8 bytes (0-255; unencodable characters
    dropped) truncated to max_word_length - 2, wrapped as
    [bow_char, bytes..., eow_char] and padded with pad_char to
    max_word_length. Sentence boundaries are [bow, bos_char, eow, pad...] and
    [bow, eos_char, eow, pad...].

    These ids are NOT shifted: for prediction add +1 (``Batcher`` does) so
    that 0 can mean "no token".
    """

    def __init__(self, filename: str, max_word_length: int, **kwargs):
        """`kwargs` go to ``Vocabulary`` (e.g. validate_file)."""
        super().__init__(filename, **kwargs)
        if max_word_length < 3:
            raise ValueError(f"max_word_length must be at least 3 (room for "
                             f"<bow>, one id, <eow>), got {max_word_length}")
        self._max_word_length = max_word_length

        self.bos_char = 256  # <begin sentence>
        self.eos_char = 257  # <end sentence>
        self.bow_char = 258  # <begin word>
        self.eow_char = 259  # <end word>
        self.pad_char = 260  # <padding>

        self.bos_chars = self._boundary_char_ids(self.bos_char)
        self.eos_chars = self._boundary_char_ids(self.eos_char)

        self._word_char_ids = np.zeros([self.size, max_word_length], np.int32)
        for i, word in enumerate(self._id_to_word):
            self._word_char_ids[i] = self._convert_word_to_char_ids(word)
        # Only when present: index -1 would overwrite the last word's ids.
        if self.bos != -1:
            self._word_char_ids[self.bos] = self.bos_chars
        if self.eos != -1:
            self._word_char_ids[self.eos] = self.eos_chars

    def _boundary_char_ids(self, char_id: int) -> np.ndarray:
        char_ids = np.full([self._max_word_length], self.pad_char, np.int32)
        char_ids[:3] = [self.bow_char, char_id, self.eow_char]
        return char_ids

    @property
    def word_char_ids(self) -> np.ndarray:
        """int32 [size, max_word_length]: char ids of every vocabulary word."""
        return self._word_char_ids

    @property
    def max_word_length(self) -> int:
        return self._max_word_length

    def _convert_word_to_char_ids(self, word: str) -> np.ndarray:
        word_bytes = word.encode('utf-8', 'ignore')[:self._max_word_length - 2]
        char_ids = np.full([self._max_word_length], self.pad_char, np.int32)
        char_ids[0] = self.bow_char
        char_ids[1:len(word_bytes) + 1] = list(word_bytes)
        char_ids[len(word_bytes) + 1] = self.eow_char
        return char_ids

    def word_to_char_ids(self, word: str) -> np.ndarray:
        """int32 [max_word_length] char ids of `word` (in vocabulary or not)."""
        if word in self._word_to_id:
            return self._word_char_ids[self._word_to_id[word]]
        return self._convert_word_to_char_ids(word)

    def encode_chars(self, sentence: Sentence, reverse: bool = False,
                     split: bool = True) -> np.ndarray:
        """Sentence -> int32 [n_tokens + 2, max_word_length].

        Rows are bos_chars, the tokens' char ids, eos_chars (eos_chars first
        and bos_chars last with `reverse`; tokens are not reordered).
        """
        tokens = sentence.split() if split else sentence
        first, last = ((self.eos_chars, self.bos_chars) if reverse
                       else (self.bos_chars, self.eos_chars))
        return np.vstack([first] + [self.word_to_char_ids(token)
                                    for token in tokens] + [last])


class Batcher(object):
    """Batch tokenised sentences into character id arrays for prediction."""

    def __init__(self, lm_vocab_file: str, max_token_length: int):
        """`max_token_length` = char_cnn.max_characters_per_token."""
        self._lm_vocab = UnicodeCharsVocabulary(lm_vocab_file, max_token_length)
        self._max_token_length = max_token_length

    def batch_sentences(self, sentences: List[List[str]]) -> np.ndarray:
        """Token lists (without <S>, </S>) -> int64 [n, max_len + 2, max_chars].

        Row k holds the char ids of <S>, the tokens and </S>, each +1, then
        zero rows up to the longest sentence.
        """
        _check_sentences(sentences)
        max_length = max(len(sentence) for sentence in sentences) + 2
        char_ids = np.zeros(
            [len(sentences), max_length, self._max_token_length], np.int64)
        for k, sentence in enumerate(sentences):
            # +1 so that 0 is the padding ("no token") value
            char_ids[k, :len(sentence) + 2] = self._lm_vocab.encode_chars(
                sentence, split=False) + 1
        return char_ids


class TokenBatcher(object):
    """Batch tokenised sentences into word id arrays for prediction."""

    def __init__(self, lm_vocab_file: str):
        self._lm_vocab = Vocabulary(lm_vocab_file)

    def batch_sentences(self, sentences: List[List[str]]) -> np.ndarray:
        """Token lists (without <S>, </S>) -> int64 [n, max_len + 2].

        Row k holds the ids of <S>, the tokens and </S>, each +1 (unknown
        tokens get unk + 1, which is 0 if the vocabulary has no <UNK>), then
        zeros.
        """
        _check_sentences(sentences)
        max_length = max(len(sentence) for sentence in sentences) + 2
        word_ids = np.zeros([len(sentences), max_length], np.int64)
        for k, sentence in enumerate(sentences):
            # +1 so that 0 is the padding ("no token") value
            word_ids[k, :len(sentence) + 2] = self._lm_vocab.encode(
                sentence, split=False) + 1
        return word_ids


##### for training
def _get_batch(generator: Iterator[EncodedSentence], batch_size: int,
               num_steps: int, max_word_length: Optional[int]
               ) -> Iterator[Dict[str, Optional[np.ndarray]]]:
    """Pack a stream of encoded sentences into [batch_size, num_steps] windows.

    Each row consumes its own sentence stream and continues a partial
    sentence in the next batch. A sentence's ids [s0..sn] give inputs s0..s(n-1)
    and targets s1..sn. When `generator` runs dry the incomplete batch is
    dropped and iteration ends.

    Yields dicts: 'token_ids', 'next_token_id' int32 [batch_size, num_steps];
    'tokens_characters' int32 [batch_size, num_steps, max_word_length], or
    None when `max_word_length` is None (word inputs).
    """
    if batch_size < 1 or num_steps < 1:
        raise ValueError(f"batch_size and num_steps must be positive, got "
                         f"{batch_size} and {num_steps}")
    cur_stream: List[Optional[EncodedSentence]] = [None] * batch_size
    while True:
        inputs = np.zeros([batch_size, num_steps], np.int32)
        targets = np.zeros([batch_size, num_steps], np.int32)
        char_inputs = (None if max_word_length is None else
                       np.zeros([batch_size, num_steps, max_word_length],
                                np.int32))
        for i in range(batch_size):
            cur_pos = 0
            while cur_pos < num_steps:
                # One id left is the previous window's last target: start anew.
                if cur_stream[i] is None or len(cur_stream[i][0]) <= 1:
                    try:
                        cur_stream[i] = next(generator)
                    except StopIteration:
                        return
                ids, char_ids = cur_stream[i]
                how_many = min(len(ids) - 1, num_steps - cur_pos)
                next_pos = cur_pos + how_many
                inputs[i, cur_pos:next_pos] = ids[:how_many]
                targets[i, cur_pos:next_pos] = ids[1:how_many + 1]
                if char_inputs is not None:
                    char_inputs[i, cur_pos:next_pos] = char_ids[:how_many]
                    char_ids = char_ids[how_many:]
                cur_stream[i] = (ids[how_many:], char_ids)
                cur_pos = next_pos
        yield {'token_ids': inputs, 'tokens_characters': char_inputs,
               'next_token_id': targets}


def _check_line_shard(shard: Optional[Tuple[int, int]]) -> Optional[Tuple[int, int]]:
    """`shard` as (index, count) of ints with 0 <= index < count, or None."""
    if shard is None:
        return None
    if not isinstance(shard, (tuple, list)) or len(shard) != 2 or not all(
            isinstance(value, numbers.Integral) and not isinstance(value, bool)
            for value in shard):
        raise ValueError(f"shard must be a pair of ints (index, count), got {shard!r}")
    index, count = int(shard[0]), int(shard[1])
    if not 0 <= index < count:
        raise ValueError(f"shard (index, count) needs 0 <= index < count, got {shard!r}")
    return index, count


class LMDataset(object):
    """A language-model dataset: files ("shards") of one sentence per line.

    Sentences are pre-tokenised and whitespace separated. Char inputs are
    produced iff `vocab` has ``encode_chars`` (a UnicodeCharsVocabulary).
    """

    def __init__(self, filepattern: Union[str, Sequence[str]], vocab: Vocabulary,
                 reverse: bool = False, test: bool = False,
                 shuffle_on_load: bool = False,
                 shard: Optional[Tuple[int, int]] = None):
        """
        Args:
            filepattern: glob of the shard files, or a list of shard paths
                (a worker of a training cluster reads its own subset).
            vocab: a Vocabulary or UnicodeCharsVocabulary.
            reverse: reverse the tokens of every sentence (backward LM).
            test: read every shard once, then stop; otherwise cycle forever
                over shards picked at random.
            shuffle_on_load: shuffle the sentences of each shard when loaded.
            shard: (index, count): keep only lines index, index + count,
                index + 2 * count, ... (0-based) of every file; how the
                workers of a cluster with fewer files than workers share them.
        """
        self._line_shard = _check_line_shard(shard)
        self._vocab = vocab
        if isinstance(filepattern, str):
            self._all_shards = sorted(glob.glob(filepattern))
        else:
            self._all_shards = sorted(filepattern)
        logger.info('Found %d shards at %s', len(self._all_shards), filepattern)
        if not self._all_shards:
            raise ValueError(f"no data file matches the pattern {filepattern!r}")
        self._shards_to_choose: List[str] = []
        self._shards_left = list(self._all_shards)  # test mode only

        self._reverse = reverse
        self._test = test
        self._shuffle_on_load = shuffle_on_load
        self._use_char_inputs = hasattr(vocab, 'encode_chars')

        # Load the first shard now so that a bad file fails here.
        self._ids = self._load_random_shard()
        self._i = 0

    def _choose_random_shard(self) -> str:
        """Next shard of a random permutation, reshuffled once all are used."""
        if not self._shards_to_choose:
            self._shards_to_choose = list(self._all_shards)
            random.shuffle(self._shards_to_choose)
        return self._shards_to_choose.pop()

    def _load_random_shard(self) -> Optional[List[EncodedSentence]]:
        """Encoded sentences of the next shard; None when test mode is done."""
        if self._test:
            if not self._shards_left:
                return None
            shard_name = self._shards_left.pop(0)
        else:
            shard_name = self._choose_random_shard()
        return self._load_shard(shard_name)

    def _load_shard(self, shard_name: str) -> List[EncodedSentence]:
        """Read one shard -> list of (ids int32 [n+2], char ids or None)."""
        logger.info('Loading data from: %s', shard_name)
        sentences = [line.split() for line in _read_lines(shard_name)]
        if not any(sentences):
            raise ValueError(f"data file {shard_name} contains no tokens")
        if self._line_shard is not None:
            index, count = self._line_shard
            n_lines = len(sentences)
            sentences = sentences[index::count]
            if not any(sentences):
                raise ValueError(
                    f"data file {shard_name} has {n_lines} line(s) but line shard "
                    f"{index} of {count} (lines {index}, {index + count}, ...) gets "
                    "no tokens from it: give each worker more lines")
        if self._reverse:
            sentences = [tokens[::-1] for tokens in sentences]
        if self._shuffle_on_load:
            random.shuffle(sentences)

        ids = [self._vocab.encode(tokens, self._reverse, split=False)
               for tokens in sentences]
        if self._use_char_inputs:
            chars_ids = [self._vocab.encode_chars(tokens, self._reverse,
                                                  split=False)
                         for tokens in sentences]
        else:
            chars_ids = [None] * len(ids)
        logger.info('Loaded %d sentences.', len(ids))
        logger.info('Finished loading')
        return list(zip(ids, chars_ids))

    def get_sentence(self) -> Iterator[EncodedSentence]:
        """Yield (ids, char ids or None) sentence after sentence.

        Endless in training mode; in test mode it ends after the last
        sentence of the last shard. The position is kept on the dataset, so a
        new generator continues where the previous one stopped.
        """
        while True:
            if self._i == len(self._ids):
                ids = self._load_random_shard()
                if ids is None:
                    return
                self._ids, self._i = ids, 0
            self._i += 1
            yield self._ids[self._i - 1]

    @property
    def max_word_length(self) -> Optional[int]:
        """Characters per token, or None for word inputs."""
        return self._vocab.max_word_length if self._use_char_inputs else None

    def iter_batches(self, batch_size: int, num_steps: int
                     ) -> Iterator[Dict[str, Optional[np.ndarray]]]:
        """Yield dicts of int32 arrays (see `_get_batch`):
        'token_ids' [batch_size, num_steps], 'next_token_id' (same shape),
        'tokens_characters' [batch_size, num_steps, max_word_length] or None.
        """
        return _get_batch(self.get_sentence(), batch_size, num_steps,
                          self.max_word_length)

    @property
    def vocab(self) -> Vocabulary:
        return self._vocab


class BidirectionalLMDataset(object):
    """A forward and a reverse LMDataset over the same shards."""

    def __init__(self, filepattern: Union[str, Sequence[str]], vocab: Vocabulary,
                 test: bool = False,
                 shuffle_on_load: bool = False,
                 shard: Optional[Tuple[int, int]] = None):
        self._data_forward = LMDataset(filepattern, vocab, reverse=False, test=test,
                                       shuffle_on_load=shuffle_on_load, shard=shard)
        self._data_reverse = LMDataset(filepattern, vocab, reverse=True, test=test,
                                       shuffle_on_load=shuffle_on_load, shard=shard)

    def iter_batches(self, batch_size: int, num_steps: int
                     ) -> Iterator[Dict[str, Optional[np.ndarray]]]:
        """Forward batch dicts with the reverse batch's arrays added under
        '<key>_reverse' ('token_ids_reverse', ...). Shapes as in LMDataset.
        """
        max_word_length = self._data_forward.max_word_length
        for batch, batch_reverse in zip(
                _get_batch(self._data_forward.get_sentence(), batch_size,
                           num_steps, max_word_length),
                _get_batch(self._data_reverse.get_sentence(), batch_size,
                           num_steps, max_word_length)):
            for key, value in batch_reverse.items():
                batch[key + '_reverse'] = value
            yield batch

    @property
    def vocab(self) -> Vocabulary:
        return self._data_forward.vocab


class InvalidNumberOfCharacters(Exception):
    pass
