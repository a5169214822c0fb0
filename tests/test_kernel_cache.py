"""numba's cache of every kernel module is keyed on all of them, so an edit to one (say, the search
directory layout in kernels.py) cannot leave another module's cached kernels running stale inlined code."""

from engine import kernel_cache, kernels, kernels_match, kernels_ngrams


def _locator(dispatcher):
    return dispatcher._cache._impl._locator


def test_kernel_modules_share_one_stamp():
    locators = [_locator(kernels.count_at), _locator(kernels_match.longest_matches),
                _locator(kernels_ngrams.enumerate_frequent)]
    for loc in locators:
        assert isinstance(loc, (kernel_cache.KernelsInTreeLocator, kernel_cache.KernelsUserDirLocator,
                                kernel_cache.KernelsUserWideLocator))
    stamps = {loc.get_source_stamp()[0] for loc in locators}  # the kernel modules' part
    assert len(stamps) == 1
    own = {loc.get_source_stamp()[1] for loc in locators}  # each function's own file
    assert len(own) == 3
    assert {p.name for p in kernel_cache.kernel_sources()} >= {"kernels.py", "kernels_match.py", "kernels_ngrams.py"}


def test_stamp_follows_the_content_of_any_module(tmp_path):
    a, b = tmp_path / "kernels.py", tmp_path / "kernels_match.py"
    a.write_text("x = 1\n")
    b.write_text("y = 2\n")

    def stamp():
        return kernel_cache._hash_sources(tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in (a, b)))

    before = stamp()
    a.write_text("x = 3\n")  # same size, new content
    assert stamp() != before
