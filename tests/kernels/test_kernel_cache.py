"""numba's cache of every kernel module is keyed on all of them, so an edit to one (say, the search
directory layout in kernels.py) cannot leave another module's cached kernels running stale inlined code."""

from engine.kernels import cache as kernel_cache
from engine.kernels import suffix as kernels
from engine.kernels import match as kernels_match
from engine.kernels import ngrams as kernels_ngrams
from engine.kernels import disk as kernels_disk


def _locator(dispatcher):
    return dispatcher._cache._impl._locator


def test_kernel_modules_share_one_stamp():
    locators = [_locator(kernels.count_at), _locator(kernels_match.longest_matches),
                _locator(kernels_ngrams.enumerate_frequent), _locator(kernels_disk.find_ranges_on_disk)]
    for loc in locators:
        assert isinstance(loc, (kernel_cache.KernelsInTreeLocator, kernel_cache.KernelsUserDirLocator,
                                kernel_cache.KernelsUserWideLocator))
    stamps = {loc.get_source_stamp()[0] for loc in locators}  # the kernel modules' part
    assert len(stamps) == 1
    own = {loc.get_source_stamp()[1] for loc in locators}  # each function's own file
    assert len(own) == 4
    assert {p.name for p in kernel_cache.kernel_sources()} == {"suffix.py", "match.py", "ngrams.py", "disk.py"}


def test_stamp_follows_the_content_of_any_module(tmp_path):
    a, b = tmp_path / "kernels.py", tmp_path / "kernels_match.py"
    a.write_text("x = 1\n")
    b.write_text("y = 2\n")

    def stamp():
        return kernel_cache._hash_sources(tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in (a, b)))

    before = stamp()
    a.write_text("x = 3\n")  # same size, new content
    assert stamp() != before


_PROBE = """
import sys
from numba import njit
from engine.kernels.cache import compile_notice, is_cached

@njit(cache=True)
def twice(x):
    return 2 * x

print(is_cached(twice), compile_notice([twice], "probe kernels", 1) is not None)
twice(3)
print(is_cached(twice))
"""


def test_a_cold_cache_is_seen_and_announced(tmp_path):
    """is_cached reads numba's index: False (and a notice) before the first compile with an empty
    cache, True after it and in every later process."""
    import os
    import subprocess
    import sys

    module = tmp_path / "probe.py"
    module.write_text(_PROBE)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"),
               PYTHONPATH=os.pathsep.join([str(kernel_cache.ENGINE_DIR.parent), os.environ.get("PYTHONPATH", "")]))
    run = [sys.executable, str(module)]
    first = subprocess.run(run, env=env, capture_output=True, text=True, check=True).stdout.split()
    assert first == ["False", "True", "True"]
    second = subprocess.run(run, env=env, capture_output=True, text=True, check=True).stdout.split()
    assert second == ["True", "False", "True"]
