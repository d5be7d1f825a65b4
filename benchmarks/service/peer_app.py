# peer_app.py: the seed's own stack as the benchmark's peer: FastAPI + SQLAlchemy on uvicorn, the
# same routes, bearer tokens, schema and database as `n3rlhf serve` (POST /api/rlhf/feedback,
# GET /api/rlhf/feedback/export as JSONL). Run: uvicorn peer_app:app (N3RLHF_PEER_DB=URL).
import json
import os
from datetime import datetime, timezone
from typing import Optional

from fastapi import Depends, FastAPI, Header, HTTPException, Response
from pydantic import BaseModel, Field
from sqlalchemy import create_engine, text

DATABASE = os.environ["N3RLHF_PEER_DB"]
TOKENS = {"Bearer annotator-token-0123456789", "Bearer all-roles-token-0123456789"}
POOL = int(os.environ.get("N3RLHF_PEER_POOL", "16"))
engine = create_engine(DATABASE, pool_size=POOL, max_overflow=POOL, pool_pre_ping=False)
if DATABASE.startswith("sqlite"):
    with engine.connect() as c:
        c.exec_driver_sql("PRAGMA journal_mode=WAL")
app = FastAPI()


class Feedback(BaseModel):
    agent_id: str = Field(min_length=1, max_length=256)
    prompt: str = Field(min_length=1, max_length=65536)
    response_chosen: str = Field(min_length=1, max_length=65536)
    response_rejected: str = Field(min_length=1, max_length=65536)
    score: Optional[float] = None
    annotator_id: Optional[str] = None
    metadata: Optional[dict] = None


def authorize(authorization: str = Header(default="")):
    if authorization not in TOKENS:
        raise HTTPException(status_code=401, detail="a bearer token is required")


def now():
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@app.post("/api/rlhf/feedback", status_code=201, dependencies=[Depends(authorize)])
def post_feedback(item: Feedback):
    with engine.begin() as c:
        row = c.execute(text(
            "INSERT INTO rlhf_feedback (agent_id, prompt, response_chosen, response_rejected, score, annotator_id,"
            " metadata, created_at) VALUES (:a, :p, :c, :r, :s, :n, :m, :t) RETURNING id"),
            {"a": item.agent_id, "p": item.prompt, "c": item.response_chosen, "r": item.response_rejected,
             "s": item.score, "n": item.annotator_id or "", "m": json.dumps(item.metadata or {}),
             "t": now() if DATABASE.startswith("sqlite") else datetime.now(timezone.utc)}).one()
    return {"id": row[0]}


@app.get("/api/rlhf/feedback/export", dependencies=[Depends(authorize)])
def export(agent_id: str, format: str = "jsonl"):
    with engine.connect() as c:
        rows = c.execute(text("SELECT prompt, response_chosen, response_rejected FROM rlhf_feedback"
                              " WHERE agent_id = :a ORDER BY created_at, id"), {"a": agent_id})
        body = "".join(json.dumps({"prompt": p, "chosen": ch, "rejected": r}) + "\n" for p, ch, r in rows)
    return Response(body, media_type="application/x-ndjson")
