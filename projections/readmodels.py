"""The read side's public face: queries over the read models, answered only once current.

CONTRACT (the API codes against this; the implementation lands here):

    Page(items: list[dict], next: str | None)

    class ReadModels:
        def __init__(self, settings: StoreSettings, app: LedgerApplication) -> None
        def wait_current(self, timeout_s: float = 5.0) -> int
            # waits until every read model has reached the log position that was current when
            # the call began; returns it; raises ledger.errors.NotReady after timeout_s
        def account(self, username: str) -> dict | None
            # {username, currency, posted, held, available, refundable, opened_at, version}
        def orders(self, username: str, *, limit: int, after: str | None) -> Page
            # items {order_no, paid, credited_back, refundable, cases: [case ids]}
        def refund_requests(self, *, status: str | None, username: str | None,
                            limit: int, after: str | None) -> Page
            # items {id, username, currency, order_no, amount, reason, status,
            #        requested_at, updated_at}
        def refund_request(self, request_id: UUID) -> dict | None   # an item + steps: [...]
        def history(self, username: str, *, limit: int, after: str | None) -> Page
            # items {position, type, amount, posted_after, available_after, at, actor, data}
        def balance(self, username: str, *, at_position: int | None = None,
                    as_of: datetime | None = None) -> dict | None
            # {username, currency, posted, held, available, refundable, position}
        def status(self) -> dict   # {log_position, read_models: {name: position}, lag}
        def close(self) -> None

    class ReadModelKeeper:   # keeps the read models current; one leader per PostgreSQL
        def __init__(self, settings: StoreSettings) -> None
        def start(self) -> None
        def stop(self) -> None
"""
