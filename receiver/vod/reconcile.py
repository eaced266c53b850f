"""Ask VOD about committed uploads whose callback never came: is the file there (callback lost)?

VOD sends a NewFileUpload callback at most three times and then gives up (vod-spec §4), so a
committed upload with no stored event after a while is either a lost callback or a file VOD
does not have; DescribeMediaInfos by FileId tells the two apart.
"""
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select
from tencentcloud.vod.v20180717 import models as vod_models

from .. import queries
from ..models import Upload

CALLBACK_LOST = "in VOD, callback lost"
NOT_IN_VOD = "not in VOD"
# DescribeMediaInfos takes at most 20 FileIds a request.
_BATCH = 20


@dataclass
class Finding:
    """What VOD said about one committed upload without a callback."""

    upload: Upload
    verdict: str
    source_context_matches: bool | None = None


def unnotified(session, older_than=timedelta(minutes=10), now=None):
    """Committed uploads started longer ago than `older_than` with no stored callback."""
    return session.scalars(
        select(Upload).where(Upload.state == "committed", Upload.file_id.is_not(None),
                             Upload.started_at < queries.started_before(older_than, now),
                             queries.upload_event_id().is_(None))
        .order_by(Upload.started_at, Upload.id)).all()


def reconcile(client, uploads):
    """Ask VOD (DescribeMediaInfos) about each upload; one Finding per upload, in order."""
    by_app = {}
    for upload in uploads:
        by_app.setdefault(upload.sub_app_id, []).append(upload)
    verdicts = {}
    for sub_app_id, group in by_app.items():
        for start in range(0, len(group), _BATCH):
            batch = group[start:start + _BATCH]
            request = vod_models.DescribeMediaInfosRequest()
            request.FileIds = [upload.file_id for upload in batch]
            request.Filters = ["basicInfo"]
            if sub_app_id is not None:
                request.SubAppId = sub_app_id
            response = client.call("DescribeMediaInfos", request)
            contexts = {info.FileId: _source_context(info) for info in response.MediaInfoSet or []}
            for upload in batch:
                if upload.file_id in contexts:
                    found = contexts[upload.file_id]
                    verdicts[upload.id] = Finding(upload, CALLBACK_LOST,
                                                  None if found is None
                                                  else found == upload.source_context)
                else:
                    verdicts[upload.id] = Finding(upload, NOT_IN_VOD)
    return [verdicts[upload.id] for upload in uploads]


def _source_context(info):
    source = getattr(info.BasicInfo, "SourceInfo", None) if info.BasicInfo else None
    return getattr(source, "SourceContext", None) if source is not None else None
