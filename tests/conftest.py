import os
import sys

from hypothesis import settings

sys.path.insert(0, os.path.dirname(__file__))  # tests import oracle.py by name

# One profile for the whole suite; CI may raise it with HYPOTHESIS_PROFILE=ci-long.  Under CI
# (CI=true) the examples are derandomized: a landing must not depend on which inputs a run
# happened to draw; developers' runs keep exploring new ones (and tools/fuzz.py runs long).
settings.register_profile("default", max_examples=40, deadline=None, print_blob=True,
                          derandomize=os.environ.get("CI") == "true")
settings.register_profile("ci-long", max_examples=400, deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
