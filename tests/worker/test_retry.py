"""Which failures give a trial back to the queue and which fail it."""

from __future__ import annotations

from mlflow.exceptions import MlflowException, RestException
from sqlalchemy.exc import OperationalError

from server.core.tracking import unreachable as mlflow_unreachable
from tests.helpers import mlflow_unreachable_error
from worker.exceptions import PermanentTrialError
from worker.retry import Outcome, RetryPolicy

POLICY = RetryPolicy(max_attempts=3)
UNREACHABLE = mlflow_unreachable_error()


def test_an_unreachable_store_or_tracking_server_requeues_while_attempts_remain() -> None:
    lost = OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly"))
    for exc in (lost, UNREACHABLE):
        assert POLICY.classify(exc, attempts=1) is Outcome.requeue
        assert POLICY.classify(exc, attempts=3) is Outcome.fail


def test_refusals_and_the_trials_own_errors_fail_it() -> None:
    refused = RestException({"error_code": "INVALID_PARAMETER_VALUE", "message": "Param value too long"})
    assert mlflow_unreachable(UNREACHABLE) and not mlflow_unreachable(refused)
    assert not mlflow_unreachable(MlflowException("Run 'abc' not found"))
    # Classified by type, not by message: the same words without a transport error behind them are no outage.
    assert not mlflow_unreachable(MlflowException(str(UNREACHABLE)))
    for exc in (refused, PermanentTrialError("no such dataset"), ValueError("bad"), RuntimeError("CUDA error")):
        assert POLICY.classify(exc, attempts=1) is Outcome.fail
