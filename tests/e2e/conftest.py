"""The end-to-end tests reuse the integration fixtures (real binaries on
free ports); they are loaded from tests/integration/conftest.py."""
import importlib.util
import os
import sys

_path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "integration",
                     "conftest.py")
_spec = importlib.util.spec_from_file_location("kr_integration_fixtures", _path)
kr_fixtures = importlib.util.module_from_spec(_spec)
sys.modules["kr_integration_fixtures"] = kr_fixtures
_spec.loader.exec_module(kr_fixtures)

vendor = kr_fixtures.vendor
kr = kr_fixtures.kr
_keyrail_responses_dir = kr_fixtures._keyrail_responses_dir  # response bodies for the hygiene sweep
