"""rmserve's tests (a package, so that tests.support imports normally)."""
