// A Java app using the integration sidecar through grpc-java, with messages and stubs that
// protoc generated from the repository's proto/ files (see build.sh).
//
//   examples/java/build.sh && examples/java/run.sh            # $INTEGRATION_SIDECAR_ADDRESS
//   examples/java/run.sh 127.0.0.1:50051                       # or an explicit host:port
//
// It runs against the sidecar's embedded defaults (`integration-sidecar serve` with no config):
// a unary cache call, a streamed AI completion from the `echo` provider, a pub/sub
// subscription, and a deliberate error whose google.rpc.ErrorInfo it decodes.
package example;

import com.google.protobuf.Any;
import com.google.protobuf.ByteString;
import com.google.protobuf.Duration;
import com.google.protobuf.UnknownFieldSet;
import io.grpc.Context;
import io.grpc.ManagedChannel;
import io.grpc.StatusRuntimeException;
import io.grpc.netty.NettyChannelBuilder;
import io.grpc.protobuf.StatusProto;
import integration.v1.AIServiceGrpc;
import integration.v1.Ai;
import integration.v1.Cache;
import integration.v1.CacheServiceGrpc;
import integration.v1.PubSubServiceGrpc;
import integration.v1.Pubsub;
import java.nio.charset.StandardCharsets;
import java.util.Iterator;
import java.util.List;
import java.util.concurrent.TimeUnit;

public final class Client {
  private Client() {}

  public static void main(String[] args) throws Exception {
    // Injected pods get INTEGRATION_SIDECAR_ADDRESS; 127.0.0.1:50051 is the sidecar's default.
    String address = args.length > 0 ? args[0] : System.getenv("INTEGRATION_SIDECAR_ADDRESS");
    if (address == null || address.isEmpty()) {
      address = "127.0.0.1:50051";
    }
    if (address.startsWith("unix:")) {
      // grpc-java 1.41 (Debian's) has no unix: name resolver; listen on TCP for this example.
      System.err.println("this example dials host:port only, not " + address);
      System.exit(2);
    }
    // Plaintext: the sidecar is in the same pod and listens on loopback.
    ManagedChannel channel = NettyChannelBuilder.forTarget(address).usePlaintext().build();
    try {
      run(channel);
    } finally {
      channel.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
    }
  }

  private static void run(ManagedChannel channel) throws Exception {
    // Stubs with a deadline: always set one.
    CacheServiceGrpc.CacheServiceBlockingStub cache = CacheServiceGrpc.newBlockingStub(channel);
    AIServiceGrpc.AIServiceBlockingStub ai = AIServiceGrpc.newBlockingStub(channel);
    PubSubServiceGrpc.PubSubServiceBlockingStub pubsub = PubSubServiceGrpc.newBlockingStub(channel);

    // 1. A unary cache call.
    cache
        .withDeadlineAfter(5, TimeUnit.SECONDS)
        .set(
            Cache.SetRequest.newBuilder()
                .setKey("example:greeting")
                .setValue(ByteString.copyFromUtf8("hello"))
                .setTtl(Duration.newBuilder().setSeconds(60))
                .build());
    Cache.GetResponse got =
        cache
            .withDeadlineAfter(5, TimeUnit.SECONDS)
            .get(Cache.GetRequest.newBuilder().setKey("example:greeting").build());
    System.out.println(
        "cache: found=" + got.getFound() + " value=" + got.getValue().toStringUtf8());

    // 2. A streamed completion: the echo provider streams the last user message back.
    Iterator<Ai.StreamCompleteResponse> chunks =
        ai.withDeadlineAfter(10, TimeUnit.SECONDS)
            .streamComplete(
                Ai.StreamCompleteRequest.newBuilder()
                    .setTarget("echo")
                    .addMessages(
                        Ai.ChatMessage.newBuilder()
                            .setRole(Ai.Role.ROLE_USER)
                            .setContent("streamed from the echo provider"))
                    .build());
    StringBuilder text = new StringBuilder();
    while (chunks.hasNext()) {
      Ai.StreamCompleteResponse chunk = chunks.next();
      text.append(chunk.getContent()); // print it as it comes in a real app
      if (chunk.hasEnd()) {
        System.out.println("ai: finish=" + chunk.getEnd().getFinishReason() + " text=" + text);
      }
    }

    // 3. A pub/sub subscription: publish once the subscription has started, then cancel it.
    Context.CancellableContext subscription = Context.current().withCancellation();
    Pubsub.PubSubMessage received;
    try {
      received =
          subscription.call(
              () -> {
                Iterator<Pubsub.SubscribeResponse> events =
                    pubsub
                        .withDeadlineAfter(10, TimeUnit.SECONDS)
                        .subscribe(
                            Pubsub.SubscribeRequest.newBuilder()
                                .addChannels("example.events")
                                .build());
                while (events.hasNext()) {
                  Pubsub.SubscribeResponse event = events.next();
                  if (event.hasStarted()) {
                    pubsub
                        .withDeadlineAfter(5, TimeUnit.SECONDS)
                        .publish(
                            Pubsub.PublishRequest.newBuilder()
                                .setChannel("example.events")
                                .setPayload(ByteString.copyFromUtf8("order 42 paid"))
                                .build());
                  } else if (event.hasMessage()) {
                    return event.getMessage();
                  }
                }
                throw new IllegalStateException("the subscription ended without a message");
              });
    } finally {
      subscription.cancel(null);
    }
    System.out.println(
        "pubsub: channel="
            + received.getChannel()
            + " payload="
            + received.getPayload().toString(StandardCharsets.UTF_8));

    // 4. A deliberate error: an empty cache key is refused with INVALID_ARGUMENT. The status
    // details (the grpc-status-details-bin trailer) hold a google.rpc.ErrorInfo whose reason
    // is one of integration.v1.ErrorReason.
    try {
      cache.withDeadlineAfter(5, TimeUnit.SECONDS).get(Cache.GetRequest.newBuilder().build());
      throw new IllegalStateException("an empty key was accepted");
    } catch (StatusRuntimeException error) {
      UnknownFieldSet info = errorInfo(error);
      System.out.println(
          "error: code="
              + error.getStatus().getCode()
              + " reason="
              + stringField(info, 1)
              + " domain="
              + stringField(info, 2));
    }
  }

  // Debian's proto-google-common-protos (1.16) predates google.rpc.ErrorInfo, so its fields
  // (reason = 1, domain = 2, metadata = 3) are read from the wire format. With a newer jar:
  // detail.is(ErrorInfo.class) and detail.unpack(ErrorInfo.class).
  private static UnknownFieldSet errorInfo(StatusRuntimeException error) throws Exception {
    com.google.rpc.Status status = StatusProto.fromThrowable(error);
    if (status == null) {
      return null;
    }
    for (Any detail : status.getDetailsList()) {
      if (detail.getTypeUrl().endsWith("/google.rpc.ErrorInfo")) {
        return UnknownFieldSet.parseFrom(detail.getValue());
      }
    }
    return null;
  }

  private static String stringField(UnknownFieldSet message, int number) {
    if (message == null || !message.hasField(number)) {
      return null;
    }
    List<ByteString> values = message.getField(number).getLengthDelimitedList();
    return values.isEmpty() ? null : values.get(0).toStringUtf8();
  }
}
