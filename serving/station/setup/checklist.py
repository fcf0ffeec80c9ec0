"""The commissioning checklist's state, in a JSON file beside the audit log; every tick audited."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from pydantic import ValidationError

from serving.station.setup.models import (CHECKLIST, STEP_IDS, ChecklistChange, ChecklistFile, ChecklistItemView,
                                         ItemState, SetupError)
from serving.strict import describe_errors

class Checklist:
    """The commissioning checklist's state, kept in a JSON file beside the audit log; every tick audited."""

    def __init__(self, path: Path, audit) -> None:
        self.path, self.audit = path, audit
        self._lock = threading.Lock()

    def load(self) -> ChecklistFile:
        """The stored state; a damaged file is named and left as it is (never overwritten)."""
        if not self.path.exists():
            return ChecklistFile()
        try:
            return ChecklistFile.model_validate(json.loads(self.path.read_text()))
        except (OSError, ValueError) as exc:
            why = describe_errors(exc, model=ChecklistFile) if isinstance(exc, ValidationError) else str(exc)
            raise SetupError(f"{self.path}: the setup checklist cannot be read ({why}); fix or move the file away "
                             "(it is kept as it is)") from None

    def items(self) -> list[ChecklistItemView]:
        """Every checklist item with its state."""
        state = self.load().items
        return [ChecklistItemView(id=s.id, title=s.title, done_when=s.done_when,
                                  **state.get(s.id, ItemState()).model_dump()) for s in CHECKLIST]

    def set(self, item: str, change: ChecklistChange, user: str) -> list[ChecklistItemView]:
        """Tick or untick ``item``: written (atomically) and audited."""
        if item not in STEP_IDS:
            raise SetupError(f"no checklist item {item!r}; the items are {', '.join(STEP_IDS)}")
        with self._lock:
            data = self.load()
            data.items[item] = ItemState(done=change.done, by=user, at=time.time(), note=change.note)
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with open(tmp, "w") as fh:
                    fh.write(data.model_dump_json(indent=2))
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, self.path)
            except OSError as exc:
                raise SetupError(f"{self.path}: cannot save the checklist ({exc.strerror})") from None
            self.audit.append(user, "setup_checklist", {"item": item, "done": change.done, "note": change.note})
        return self.items()
