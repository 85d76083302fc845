"""AwsService through a real gRPC server against the moto server: DynamoDB, SNS, IAM and
Lambda operations called by name, pagination page by page, the allow list, parameter
checking by the operation's shapes, and AWS's errors as gRPC statuses."""

from __future__ import annotations

import base64
import io
import zipfile

import grpc
import pytest
from aws.aws_service_support import (
    aws_config,
    aws_sidecar,
    moto_lambda_without_docker,
    plain,
    struct,
)
from aws_server import MotoServer
from support import error_info, retry_delay

from generated.integration.v1 import aws_pb2

Code = grpc.StatusCode


def table(name: str) -> dict[str, object]:
    return {
        "TableName": name,
        "KeySchema": [
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        "AttributeDefinitions": [
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "N"},
        ],
        "BillingMode": "PAY_PER_REQUEST",
    }


def call(service: str, operation: str, **parameters: object) -> aws_pb2.CallRequest:
    return aws_pb2.CallRequest(
        service=service, operation=operation, parameters=struct(dict(parameters))
    )


async def test_dynamodb_items_round_trip_with_blobs_numbers_and_timestamps(
    moto_server: MotoServer,
) -> None:
    async with aws_sidecar(aws_config(moto_server)) as (_, aws):
        created = await aws.Call(call("dynamodb", "CreateTable", **table("svc-items")))
        description = plain(created.result)["TableDescription"]
        assert description["TableName"] == "svc-items"
        assert description["CreationDateTime"].endswith("Z")  # a timestamp, as ISO 8601 UTC
        assert created.http_status == 200 and created.request_id

        blob = bytes(range(256))
        item = {
            "pk": {"S": "user#1"},
            "sk": {"N": "1"},
            "avatar": {"B": base64.b64encode(blob).decode()},
            "tags": {"SS": ["a", "b"]},
        }
        before = moto_server.calls("dynamodb:PutItem")
        await aws.Call(call("dynamodb", "PutItem", TableName="svc-items", Item=item))
        assert moto_server.calls("dynamodb:PutItem") == before + 1

        got = await aws.Call(
            call(
                "dynamodb",
                "GetItem",
                TableName="svc-items",
                Key={"pk": {"S": "user#1"}, "sk": {"N": "1"}},
                ConsistentRead=True,
            )
        )
        answer = plain(got.result)["Item"]
        assert base64.b64decode(answer["avatar"]["B"]) == blob
        assert sorted(answer["tags"]["SS"]) == ["a", "b"]
        assert answer["pk"] == {"S": "user#1"}


async def test_query_is_paginated_page_by_page_and_resumes_from_next_token(
    moto_server: MotoServer,
) -> None:
    async with aws_sidecar(aws_config(moto_server)) as (_, aws):
        await aws.Call(call("dynamodb", "CreateTable", **table("svc-pages")))
        for n in range(25):
            item = {"pk": {"S": "p"}, "sk": {"N": str(n)}, "v": {"S": f"item-{n}"}}
            await aws.Call(call("dynamodb", "PutItem", TableName="svc-pages", Item=item))
        query = {
            "TableName": "svc-pages",
            "KeyConditionExpression": "pk = :p",
            "ExpressionAttributeValues": {":p": {"S": "p"}},
            "Limit": 4,
        }

        before = moto_server.calls("dynamodb:Query")
        request = aws_pb2.PaginateRequest(
            service="dynamodb", operation="Query", parameters=struct(query)
        )
        pages = [page async for page in aws.Paginate(request)]
        assert moto_server.calls("dynamodb:Query") - before == len(pages)  # one request a page
        assert [page.page_number for page in pages] == list(range(1, len(pages) + 1))
        assert len(pages) >= 7  # 25 items, 4 a page
        items = [item for page in pages for item in plain(page.page).get("Items", [])]
        assert [int(item["sk"]["N"]) for item in items] == list(range(25))
        assert all(len(plain(page.page).get("Items", [])) <= 4 for page in pages)
        assert all(page.next_token for page in pages[:-1]) and not pages[-1].next_token

        # max_pages stops early; the last page's next_token resumes where it stopped.
        first = [
            page
            async for page in aws.Paginate(
                aws_pb2.PaginateRequest(
                    service="dynamodb", operation="Query", parameters=struct(query), max_pages=2
                )
            )
        ]
        assert len(first) == 2 and first[-1].next_token
        rest = [
            page
            async for page in aws.Paginate(
                aws_pb2.PaginateRequest(
                    service="dynamodb",
                    operation="Query",
                    parameters=struct(query),
                    starting_token=first[-1].next_token,
                )
            )
        ]
        resumed = [
            int(item["sk"]["N"])
            for page in (*first, *rest)
            for item in plain(page.page).get("Items", [])
        ]
        assert resumed == list(range(25))


async def test_paginate_refuses_an_operation_without_a_pagination_model(
    moto_server: MotoServer,
) -> None:
    async with aws_sidecar(aws_config(moto_server)) as (_, aws):
        before = len(moto_server.log())
        request = aws_pb2.PaginateRequest(
            service="dynamodb",
            operation="GetItem",
            parameters=struct({"TableName": "t", "Key": {"pk": {"S": "a"}}}),
        )
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            [page async for page in aws.Paginate(request)]
        assert raised.value.code() == Code.FAILED_PRECONDITION
        assert error_info(raised.value).reason == "UNSUPPORTED_OPERATION"

        bad_token = aws_pb2.PaginateRequest(
            service="dynamodb",
            operation="Scan",
            parameters=struct({"TableName": "t"}),
            starting_token="not-a-token",
        )
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            [page async for page in aws.Paginate(bad_token)]
        assert raised.value.code() == Code.INVALID_ARGUMENT
        assert error_info(raised.value).metadata["field"] == "starting_token"
        assert len(moto_server.log()) == before


async def test_sns_topics_are_created_and_published_to(moto_server: MotoServer) -> None:
    async with aws_sidecar(aws_config(moto_server)) as (_, aws):
        created = await aws.Call(call("sns", "CreateTopic", Name="svc-topic"))
        arn = plain(created.result)["TopicArn"]
        assert arn.endswith(":svc-topic")
        published = await aws.Call(
            call(
                "sns",
                "Publish",
                TopicArn=arn,
                Message="hello",
                MessageAttributes={
                    "kind": {
                        "DataType": "Binary",
                        "BinaryValue": base64.b64encode(b"\x00\x01").decode(),
                    }
                },
            )
        )
        assert plain(published.result)["MessageId"]
        pages = [
            page
            async for page in aws.Paginate(
                aws_pb2.PaginateRequest(service="sns", operation="ListTopics")
            )
        ]
        arns = [t["TopicArn"] for page in pages for t in plain(page.page).get("Topics", [])]
        assert arn in arns


def _zip(source: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("handler.py", source)
    return buffer.getvalue()


async def test_lambda_functions_are_created_and_invoked_with_a_bounded_payload(
    moto_server: MotoServer,
) -> None:
    """moto's simple Lambda backend (no Docker): CreateFunction stores the function, Invoke
    runs no code and answers the request payload back. What this covers: blob parameters
    (ZipFile, Payload) as base64, the streamed Payload of the answer read within the bound
    and answered as base64, StatusCode and the other members of a REST-JSON answer."""
    extra = "server: {max_send_message_size: 64KiB}\n"
    async with (
        moto_lambda_without_docker(moto_server),
        aws_sidecar(aws_config(moto_server, extra=extra)) as (_, aws),
    ):
        role = await aws.Call(
            call(
                "iam",
                "CreateRole",
                RoleName="svc-lambda-role",
                AssumeRolePolicyDocument='{"Version": "2012-10-17", "Statement": []}',
            )
        )
        role_arn = plain(role.result)["Role"]["Arn"]
        code = _zip("def handler(event, context):\n    return event\n")
        created = await aws.Call(
            call(
                "lambda",
                "CreateFunction",
                FunctionName="svc-fn",
                Runtime="python3.11",
                Role=role_arn,
                Handler="handler.handler",
                Code={"ZipFile": base64.b64encode(code).decode()},
            )
        )
        assert plain(created.result)["FunctionName"] == "svc-fn"

        payload = b'{"hello": "world"}'
        invoked = await aws.Call(
            call(
                "lambda",
                "Invoke",
                FunctionName="svc-fn",
                Payload=base64.b64encode(payload).decode(),
            )
        )
        answer = plain(invoked.result)
        assert answer["StatusCode"] == 200
        assert base64.b64decode(answer["Payload"]) == payload

        big = b'"' + b"x" * 60_000 + b'"'  # more than a 64 KiB message holds once base64
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await aws.Call(
                call(
                    "lambda",
                    "Invoke",
                    FunctionName="svc-fn",
                    Payload=base64.b64encode(big).decode(),
                )
            )
        assert raised.value.code() == Code.RESOURCE_EXHAUSTED
        assert error_info(raised.value).reason == "RESULT_TOO_LARGE"

        before = len(moto_server.log())
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await aws.Call(call("lambda", "InvokeWithResponseStream", FunctionName="svc-fn"))
        assert raised.value.code() == Code.FAILED_PRECONDITION
        assert error_info(raised.value).reason == "UNSUPPORTED_OPERATION"
        assert len(moto_server.log()) == before


async def test_an_operation_outside_the_allow_list_is_refused_before_anything_is_sent(
    moto_server: MotoServer,
) -> None:
    async with aws_sidecar(aws_config(moto_server)) as (_, aws):
        before = len(moto_server.log())
        for request in (
            call("sns", "DeleteTopic", TopicArn="arn:aws:sns:us-east-1:123456789012:x"),
            call("s3", "ListBuckets"),
            call("sqs", "NoSuchOperationAtAll"),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await aws.Call(request)
            assert raised.value.code() == Code.PERMISSION_DENIED
            info = error_info(raised.value)
            assert info.reason == "OPERATION_NOT_ALLOWED"
            assert info.metadata["aws_operation"] == request.operation
        assert len(moto_server.log()) == before  # moto's request log: nothing reached it

    async with aws_sidecar(aws_config(moto_server, allow=())) as (_, aws):  # the default
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await aws.Call(call("dynamodb", "ListTables"))
        assert raised.value.code() == Code.PERMISSION_DENIED
        assert len(moto_server.log()) == before


@pytest.mark.parametrize(
    ("operation", "parameters", "field", "says"),
    [
        ("GetItem", {"TableName": 5, "Key": {}}, "parameters.TableName", "must be a string"),
        ("GetItem", {"Key": {"pk": {"S": "a"}}}, "parameters.TableName", "is required"),
        (
            "GetItem",
            {"TableName": "t", "Key": {"pk": {"S": "a"}}, "Tablename": "t"},
            "parameters.Tablename",
            "did you mean TableName",
        ),
        (
            "GetItem",
            {"TableName": "t", "Key": {"pk": {"Q": "a"}}},
            "parameters.Key.pk.Q",
            "unknown",
        ),
        (
            "PutItem",
            {"TableName": "t", "Item": {"pk": {"B": "not base64!"}}},
            "parameters.Item.pk.B",
            "base64",
        ),
        ("Scan", {"TableName": "t", "Limit": 2.5}, "parameters.Limit", "integral"),
        ("Scan", {"TableName": "t", "Segment": True}, "parameters.Segment", "integral"),
        ("Scan", {"TableName": ""}, "parameters.TableName", "length"),  # botocore's own check
        ("ListTables", {"Limit": 0}, "parameters.Limit", "valid min"),
    ],
)
async def test_bad_parameters_are_invalid_argument_naming_the_member(
    moto_server: MotoServer, operation: str, parameters: dict[str, object], field: str, says: str
) -> None:
    async with aws_sidecar(aws_config(moto_server)) as (_, aws):
        before = len(moto_server.log())
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await aws.Call(call("dynamodb", operation, **parameters))
        assert raised.value.code() == Code.INVALID_ARGUMENT
        info = error_info(raised.value)
        assert (info.reason, info.metadata["field"]) == ("INVALID_REQUEST", field)
        assert says in (raised.value.details() or "")
        assert len(moto_server.log()) == before


async def test_unknown_services_and_operations_list_the_closest_names(
    moto_server: MotoServer,
) -> None:
    async with aws_sidecar(aws_config(moto_server)) as (_, aws):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await aws.Call(call("dynamdb", "GetItem"))
        assert raised.value.code() == Code.INVALID_ARGUMENT
        assert "did you mean dynamodb" in (raised.value.details() or "")
        assert error_info(raised.value).metadata["field"] == "service"

        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await aws.Call(call("dynamodb", "Putitem"))
        assert raised.value.code() == Code.INVALID_ARGUMENT
        assert "did you mean PutItem" in (raised.value.details() or "")
        assert error_info(raised.value).metadata["field"] == "operation"


async def test_a_missing_table_is_not_found_with_the_aws_error_code(
    moto_server: MotoServer,
) -> None:
    async with aws_sidecar(aws_config(moto_server)) as (_, aws):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await aws.Call(
                call("dynamodb", "GetItem", TableName="svc-missing", Key={"pk": {"S": "a"}})
            )
        assert raised.value.code() == Code.NOT_FOUND
        info = error_info(raised.value)
        assert info.reason == "UPSTREAM_NOT_FOUND"
        assert info.metadata["aws_error_code"] == "ResourceNotFoundException"
        assert info.metadata["aws_operation"] == "GetItem"


async def test_a_failed_condition_is_failed_precondition(moto_server: MotoServer) -> None:
    async with aws_sidecar(aws_config(moto_server)) as (_, aws):
        await aws.Call(call("dynamodb", "CreateTable", **table("svc-conditions")))
        item = {"pk": {"S": "a"}, "sk": {"N": "1"}}
        put = call(
            "dynamodb",
            "PutItem",
            TableName="svc-conditions",
            Item=item,
            ConditionExpression="attribute_not_exists(pk)",
        )
        await aws.Call(put)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await aws.Call(put)
        assert raised.value.code() == Code.FAILED_PRECONDITION
        info = error_info(raised.value)
        assert info.metadata["aws_error_code"] == "ConditionalCheckFailedException"


async def test_a_throttled_call_is_resource_exhausted_with_retry_info(
    moto_server: MotoServer,
) -> None:
    async with aws_sidecar(aws_config(moto_server)) as (_, aws):
        arn = plain((await aws.Call(call("sns", "CreateTopic", Name="svc-throttled"))).result)[
            "TopicArn"
        ]
        before = moto_server.calls("sns:Publish")
        moto_server.fail_next(
            "sns:Publish", status=400, code="ThrottlingException", retry_after="2"
        )
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await aws.Call(call("sns", "Publish", TopicArn=arn, Message="m"))
        assert raised.value.code() == Code.RESOURCE_EXHAUSTED
        info = error_info(raised.value)
        assert (info.reason, info.metadata["aws_error_code"]) == (
            "UPSTREAM_RATE_LIMITED",
            "ThrottlingException",
        )
        assert retry_delay(raised.value) == 2.0
        assert moto_server.calls("sns:Publish") == before + 1  # not retried


async def test_5xx_and_throttling_count_for_the_breaker_and_4xx_does_not(
    moto_server: MotoServer,
) -> None:
    extra = (
        "    retry_policy: {max_retries: 2, base_delay: 1ms, max_delay: 2ms}\n"
        "    circuit_breaker: {failure_threshold: 10}\n"
    )
    async with aws_sidecar(aws_config(moto_server, extra=extra)) as (running, aws):
        arn = plain((await aws.Call(call("sns", "CreateTopic", Name="svc-breaker"))).result)[
            "TopicArn"
        ]
        pipeline = running.integrations.resolve("cloud", "aws").pipeline

        def failures() -> int:
            breaker = pipeline.snapshot().circuit_breaker
            assert breaker is not None
            return breaker.consecutive_failures

        try:
            # A 4xx is the request's fault: not retried, not counted.
            before = moto_server.calls("sns:Publish")
            moto_server.fail_next("sns:Publish", status=400, code="InvalidParameter")
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await aws.Call(call("sns", "Publish", TopicArn=arn, Message="m"))
            assert raised.value.code() == Code.INVALID_ARGUMENT
            assert error_info(raised.value).reason == "UPSTREAM_REJECTED"
            assert failures() == 0

            # A 5xx on a write: UNAVAILABLE, counted, sent once (Publish is not a read).
            moto_server.fail_next("sns:Publish", status=503, code="ServiceUnavailable", count=5)
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await aws.Call(call("sns", "Publish", TopicArn=arn, Message="m"))
            assert raised.value.code() == Code.UNAVAILABLE
            assert error_info(raised.value).reason == "UPSTREAM_UNAVAILABLE"
            assert failures() == 1
            assert moto_server.calls("sns:Publish") == before + 2
            moto_server.clear_faults()

            # A 5xx on a read is retried (and each failed attempt counted) until it works.
            listed = moto_server.calls("sns:ListTopics")
            moto_server.fail_next("sns:ListTopics", status=500, code="InternalError")
            topics = await aws.Call(call("sns", "ListTopics"))
            assert arn in [t["TopicArn"] for t in plain(topics.result)["Topics"]]
            assert moto_server.calls("sns:ListTopics") == listed + 2
            assert failures() == 0  # the success closed the streak

            # Throttling is upstream trouble too: counted, and a read is retried.
            moto_server.fail_next("sns:Publish", status=400, code="Throttling")
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await aws.Call(call("sns", "Publish", TopicArn=arn, Message="m"))
            assert raised.value.code() == Code.RESOURCE_EXHAUSTED
            assert retry_delay(raised.value) == 1.0  # AWS sent no Retry-After: the default
            assert failures() == 1
            listed = moto_server.calls("sns:ListTopics")
            moto_server.fail_next("sns:ListTopics", status=400, code="Throttling")
            await aws.Call(call("sns", "ListTopics"))
            assert moto_server.calls("sns:ListTopics") == listed + 2
        finally:
            moto_server.clear_faults()


async def test_a_page_that_fails_transiently_is_retried_alone(moto_server: MotoServer) -> None:
    extra = "    retry_policy: {max_retries: 2, base_delay: 1ms, max_delay: 2ms}\n"
    async with aws_sidecar(aws_config(moto_server, extra=extra)) as (_, aws):
        await aws.Call(call("dynamodb", "CreateTable", **table("svc-retried-pages")))
        for n in range(6):
            item = {"pk": {"S": "p"}, "sk": {"N": str(n)}}
            await aws.Call(call("dynamodb", "PutItem", TableName="svc-retried-pages", Item=item))
        query = {
            "TableName": "svc-retried-pages",
            "KeyConditionExpression": "pk = :p",
            "ExpressionAttributeValues": {":p": {"S": "p"}},
            "Limit": 2,
        }
        before = moto_server.calls("dynamodb:Query")
        moto_server.fail_next("dynamodb:Query", status=500, code="InternalError")
        try:
            request = aws_pb2.PaginateRequest(
                service="dynamodb", operation="Query", parameters=struct(query)
            )
            pages = [page async for page in aws.Paginate(request)]
        finally:
            moto_server.clear_faults()
        keys = [int(i["sk"]["N"]) for page in pages for i in plain(page.page).get("Items", [])]
        assert keys == list(range(6))  # nothing lost, nothing twice
        assert moto_server.calls("dynamodb:Query") - before == len(pages) + 1
