"""What the differential test files of one kind of sequence share: the
images of their seeds, each run once per back end, and the check that a
back end ends every sequence of an image as native does (the failure text is
asmseq.report's: the seed and index of each differing sequence, its source
and both dumps)."""
import pytest

from virtlab import asmseq as S, seqgen as G


class Images:
    """Batches of one kind of sequence (seqgen.batch's keywords, `classic`
    apart), PER_IMAGE to an image, built and run once each."""

    def __init__(self, per_image, **kind):
        self.per_image, self.kind = per_image, kind
        self._sequences, self._runs = {}, {}

    def sequences(self, seed, classic=False):
        key = (seed, classic)
        if key not in self._sequences:
            self._sequences[key] = tuple(G.batch(seed, self.per_image, classic=classic,
                                                 **self.kind))
        return self._sequences[key]

    def run(self, backend, seed, classic=False):
        key = (backend, seed, classic)
        if key not in self._runs:
            seqs = self.sequences(seed, classic)
            self._runs[key] = S.run(backend, seqs, S.image(seqs))
        return self._runs[key]

    def check(self, backend, seed, classic=False):
        """Fail, saying how, unless `backend` ends every sequence of the
        image as native does."""
        reference = self.run("native", seed, classic)
        assert reference.ok, reference.reason
        report = S.report(self.sequences(seed, classic), reference,
                          self.run(backend, seed, classic))
        if report:
            pytest.fail(report, pytrace=False)
