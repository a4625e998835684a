#include "ipfs_fetch/http_client.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <thread>

#include "ipfs_fetch/retry_hint.h"
#include "tests/support/fault_http_server.h"

namespace ipfly::fetch {
namespace {

using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;
using test::FaultHttpServer;
using test::Responder;
using test::TestRequest;

// Elapsed-time bound for "fails at the deadline, does not hang" assertions.
constexpr auto kSlack = milliseconds(1500);

class HttpClientTest : public ::testing::Test {
 protected:
  void Serve(FaultHttpServer::Handler h) {
    server_ = std::make_unique<FaultHttpServer>(std::move(h));
    ASSERT_TRUE(server_->Start().ok());
  }
  std::string Url(const std::string& path) { return server_->base_url() + path; }
  HttpRequest Get(const std::string& path) {
    HttpRequest r;
    r.url = Url(path);
    r.deadline = Clock::now() + milliseconds(10'000);
    return r;
  }

  HttpClient client_;
  std::unique_ptr<FaultHttpServer> server_;
};

TEST_F(HttpClientTest, BufferedGetWithCaseInsensitiveHeaders) {
  Serve([](const TestRequest& req, Responder& out) {
    EXPECT_EQ(req.method, "GET");
    EXPECT_EQ(req.Header("x-test").value_or(""), "yes");
    out.Respond(200, {{"Content-Type", "text/plain"}, {"X-Multi", "a"}, {"x-multi", "b"}},
                "hello " + req.path);
  });
  HttpRequest r = Get("/some/path");
  r.headers = {{"X-Test", "yes"}};
  auto resp = client_.Fetch(r);
  ASSERT_TRUE(resp.ok()) << resp.error().ToString();
  EXPECT_EQ(resp->status, 200);
  EXPECT_EQ(resp->body_text(), "hello /some/path");
  EXPECT_EQ(resp->headers.Get("content-type").value_or(""), "text/plain");
  EXPECT_EQ(resp->headers.Get("CONTENT-TYPE").value_or(""), "text/plain");
  EXPECT_EQ(resp->headers.GetAll("X-MULTI").size(), 2u);
  EXPECT_FALSE(resp->headers.Has("X-Absent"));
}

TEST_F(HttpClientTest, HttpErrorStatusIsNotATransportError) {
  Serve([](const TestRequest&, Responder& out) {
    out.Respond(503, {{"Retry-After", "7"}}, "busy");
  });
  auto resp = client_.Fetch(Get("/"));
  ASSERT_TRUE(resp.ok());
  EXPECT_EQ(resp->status, 503);
  Error e = HttpStatusError(*resp, "test");
  EXPECT_EQ(e.code(), Errc::kUnavailable);
  EXPECT_NE(e.message().find("busy"), std::string::npos);
  ASSERT_TRUE(RetryAfterHint(e).has_value());
  EXPECT_EQ(*RetryAfterHint(e), milliseconds(7000));
}

TEST_F(HttpClientTest, KeepAliveReusesTheConnection) {
  Serve([](const TestRequest& req, Responder& out) {
    out.Respond(200, std::to_string(req.request_on_connection));
  });
  for (int i = 1; i <= 5; ++i) {
    auto resp = client_.Fetch(Get("/"));
    ASSERT_TRUE(resp.ok()) << resp.error().ToString();
    EXPECT_EQ(resp->body_text(), std::to_string(i));
  }
  EXPECT_EQ(server_->connections_accepted(), 1u);
}

TEST_F(HttpClientTest, StreamsChunksAndReadsTrailers) {
  Serve([](const TestRequest&, Responder& out) {
    out.StartChunked(200, {{"Content-Type", "application/octet-stream"}}, {"X-Stream-Error"});
    out.WriteChunk("abc");
    out.WriteChunk("defg");
    out.FinishChunked({{"X-Stream-Error", "boom"}});
  });
  std::string got;
  int headers_calls = 0;
  auto resp = client_.Stream(
      Get("/"),
      [&](ByteView b) {
        got += AsString(b);
        return OkStatus();
      },
      [&](const HttpResponse& r) {
        ++headers_calls;
        EXPECT_EQ(r.status, 200);
        EXPECT_EQ(r.headers.Get("Trailer").value_or(""), "X-Stream-Error");
        return OkStatus();
      });
  ASSERT_TRUE(resp.ok()) << resp.error().ToString();
  EXPECT_EQ(got, "abcdefg");
  EXPECT_EQ(headers_calls, 1);
  EXPECT_TRUE(resp->body.empty());
  EXPECT_EQ(resp->body_bytes, 7u);
  EXPECT_EQ(resp->trailers.Get("x-stream-error").value_or(""), "boom");
  EXPECT_FALSE(resp->headers.Has("X-Stream-Error"));
}

TEST_F(HttpClientTest, StreamCallbackErrorAbortsAndIsReturned) {
  Serve([](const TestRequest&, Responder& out) {
    out.StartChunked(200, {});
    for (int i = 0; i < 100 && out.WriteChunk("0123456789"); ++i) {
    }
    out.FinishChunked();
  });
  int calls = 0;
  auto resp = client_.Stream(Get("/"), [&](ByteView) -> Status {
    ++calls;
    return Corrupt("stop here");
  });
  ASSERT_FALSE(resp.ok());
  EXPECT_EQ(resp.error().code(), Errc::kCorrupt);
  EXPECT_EQ(resp.error().message(), "stop here");
  EXPECT_EQ(calls, 1);
}

TEST_F(HttpClientTest, HeadersHookCanRejectBeforeTheBody) {
  Serve([](const TestRequest&, Responder& out) {
    out.Respond(200, {{"Content-Type", "text/html"}}, "<html>");
  });
  bool body_seen = false;
  auto resp = client_.Stream(
      Get("/"),
      [&](ByteView) {
        body_seen = true;
        return OkStatus();
      },
      [](const HttpResponse& r) -> Status {
        return Unsupported("type " + r.headers.Get("Content-Type").value_or(""));
      });
  ASSERT_FALSE(resp.ok());
  EXPECT_EQ(resp.error().code(), Errc::kUnsupported);
  EXPECT_FALSE(body_seen);
}

TEST_F(HttpClientTest, StreamBuffersErrorBodiesInsteadOfCallingBack) {
  Serve([](const TestRequest&, Responder& out) {
    out.Respond(500, {{"Content-Type", "application/json"}}, R"({"Message":"nope"})");
  });
  bool called = false;
  auto resp = client_.Stream(Get("/"), [&](ByteView) {
    called = true;
    return OkStatus();
  });
  ASSERT_TRUE(resp.ok());
  EXPECT_EQ(resp->status, 500);
  EXPECT_EQ(resp->body_text(), R"({"Message":"nope"})");
  EXPECT_FALSE(called);
}

TEST_F(HttpClientTest, BodyCapGivesTooLarge) {
  Serve([](const TestRequest& req, Responder& out) {
    std::string body(5000, 'x');
    if (req.path == "/fixed") {
      out.Respond(200, body);
    } else {
      out.StartChunked(200, {});
      for (int i = 0; i < 5; ++i) out.WriteChunk(std::string_view(body).substr(0, 1000));
      out.FinishChunked();
    }
  });
  for (const char* path : {"/fixed", "/chunked"}) {
    HttpRequest r = Get(path);
    r.max_body_bytes = 4096;
    auto resp = client_.Fetch(r);
    ASSERT_FALSE(resp.ok()) << path;
    EXPECT_EQ(resp.error().code(), Errc::kTooLarge) << resp.error().ToString();
    r.max_body_bytes = 5000;
    EXPECT_TRUE(client_.Fetch(r).ok()) << path;
  }
}

TEST_F(HttpClientTest, ConnectionRefusedIsUnavailable) {
  Serve([](const TestRequest&, Responder& out) { out.Respond(200, ""); });
  std::string url = Url("/");
  server_->Stop();
  HttpRequest r;
  r.url = url;
  r.deadline = Clock::now() + milliseconds(5000);
  auto resp = client_.Fetch(r);
  ASSERT_FALSE(resp.ok());
  EXPECT_EQ(resp.error().code(), Errc::kUnavailable) << resp.error().ToString();
}

TEST_F(HttpClientTest, ResetIsUnavailable) {
  Serve([](const TestRequest&, Responder& out) { out.Reset(); });
  auto resp = client_.Fetch(Get("/"));
  ASSERT_FALSE(resp.ok());
  EXPECT_EQ(resp.error().code(), Errc::kUnavailable) << resp.error().ToString();
}

TEST_F(HttpClientTest, ResetMidBodyIsUnavailable) {
  Serve([](const TestRequest&, Responder& out) {
    out.StartFixed(200, {}, 100000);
    out.Write(std::string(1000, 'a'));
    out.SleepFor(milliseconds(50));
    out.Reset();
  });
  auto resp = client_.Fetch(Get("/"));
  ASSERT_FALSE(resp.ok());
  EXPECT_EQ(resp.error().code(), Errc::kUnavailable) << resp.error().ToString();
}

TEST_F(HttpClientTest, TruncatedBodyIsUnavailable) {
  Serve([](const TestRequest& req, Responder& out) {
    if (req.path == "/fixed") {
      out.StartFixed(200, {}, 1000);
      out.Write(std::string(10, 'a'));
    } else {
      out.StartChunked(200, {});
      out.WriteChunk("partial");
    }
    out.Close();
  });
  for (const char* path : {"/fixed", "/chunked"}) {
    std::string got;
    auto resp = client_.Stream(Get(path), [&](ByteView b) {
      got += AsString(b);
      return OkStatus();
    });
    ASSERT_FALSE(resp.ok()) << path;
    EXPECT_EQ(resp.error().code(), Errc::kUnavailable) << resp.error().ToString();
    EXPECT_FALSE(got.empty()) << "the bytes before the cut are delivered";
  }
}

TEST_F(HttpClientTest, HangingServerTimesOutAtTheDeadline) {
  Serve([](const TestRequest&, Responder& out) { out.Hang(); });
  HttpRequest r = Get("/");
  r.deadline = Clock::now() + milliseconds(300);
  auto start = Clock::now();
  auto resp = client_.Fetch(r);
  auto elapsed = Clock::now() - start;
  ASSERT_FALSE(resp.ok());
  EXPECT_EQ(resp.error().code(), Errc::kTimeout) << resp.error().ToString();
  EXPECT_GE(elapsed, milliseconds(250));
  EXPECT_LT(elapsed, milliseconds(300) + kSlack);
}

TEST_F(HttpClientTest, SlowBodyTimesOutAtTheDeadline) {
  Serve([](const TestRequest&, Responder& out) {
    out.StartFixed(200, {}, 1000);
    for (int i = 0; i < 1000; ++i) {
      if (!out.SleepFor(milliseconds(50)) || !out.Write("x")) return;
    }
  });
  HttpRequest r = Get("/");
  r.deadline = Clock::now() + milliseconds(400);
  auto start = Clock::now();
  auto resp = client_.Fetch(r);
  auto elapsed = Clock::now() - start;
  ASSERT_FALSE(resp.ok());
  EXPECT_EQ(resp.error().code(), Errc::kTimeout) << resp.error().ToString();
  EXPECT_LT(elapsed, milliseconds(400) + kSlack);
}

TEST_F(HttpClientTest, StallIsDetectedBeforeTheDeadline) {
  Serve([](const TestRequest&, Responder& out) {
    out.StartFixed(200, {}, 100);
    out.Write("some");
    out.Hang();
  });
  HttpRequest r = Get("/");
  r.stall_timeout = milliseconds(300);
  auto start = Clock::now();
  auto resp = client_.Fetch(r);
  auto elapsed = Clock::now() - start;
  ASSERT_FALSE(resp.ok());
  EXPECT_EQ(resp.error().code(), Errc::kUnavailable) << resp.error().ToString();
  EXPECT_NE(resp.error().message().find("stalled"), std::string::npos);
  EXPECT_GE(elapsed, milliseconds(250));
  EXPECT_LT(elapsed, milliseconds(300) + kSlack);
}

TEST_F(HttpClientTest, CancelAbortsAWaitingRequestPromptly) {
  Serve([](const TestRequest&, Responder& out) { out.Hang(); });
  auto token = std::make_shared<CancelToken>();
  HttpRequest r = Get("/");
  r.cancel = token;
  std::thread canceller([token] {
    std::this_thread::sleep_for(milliseconds(150));
    token->Cancel();
  });
  auto start = Clock::now();
  auto resp = client_.Fetch(r);
  auto elapsed = Clock::now() - start;
  canceller.join();
  ASSERT_FALSE(resp.ok());
  EXPECT_EQ(resp.error().code(), Errc::kCancelled) << resp.error().ToString();
  EXPECT_LT(elapsed, milliseconds(700));  // not the 1 s poll interval, not the deadline
  // A cancelled token fails new requests at once.
  auto again = client_.Fetch(r);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code(), Errc::kCancelled);
}

TEST_F(HttpClientTest, DeadlineInThePastFailsWithoutARequest) {
  Serve([](const TestRequest&, Responder& out) { out.Respond(200, ""); });
  HttpRequest r = Get("/");
  r.deadline = Clock::now() - milliseconds(1);
  auto resp = client_.Fetch(r);
  ASSERT_FALSE(resp.ok());
  EXPECT_EQ(resp.error().code(), Errc::kTimeout);
  EXPECT_EQ(server_->requests_served(), 0u);
}

TEST_F(HttpClientTest, OnlyHttpAndHttpsAreAllowed) {
  for (const char* url : {"file:///etc/passwd", "ftp://127.0.0.1/x", "gopher://x", "/relative"}) {
    HttpRequest r;
    r.url = url;
    auto resp = client_.Fetch(r);
    ASSERT_FALSE(resp.ok()) << url;
    EXPECT_EQ(resp.error().code(), Errc::kInvalidArgument) << url;
  }
}

TEST_F(HttpClientTest, RedirectsAreNotFollowedByDefault) {
  Serve([](const TestRequest& req, Responder& out) {
    if (req.path == "/a") {
      out.Respond(302, {{"Location", "/b"}}, "");
    } else {
      out.Respond(200, "at b");
    }
  });
  auto resp = client_.Fetch(Get("/a"));
  ASSERT_TRUE(resp.ok());
  EXPECT_EQ(resp->status, 302);
  HttpRequest r = Get("/a");
  r.follow_redirects = true;
  resp = client_.Fetch(r);
  ASSERT_TRUE(resp.ok());
  EXPECT_EQ(resp->status, 200);
  EXPECT_EQ(resp->body_text(), "at b");
}

TEST_F(HttpClientTest, PostBodyAndMultipartFromMemoryAndFile) {
  std::mutex mu;
  std::vector<TestRequest> seen;
  Serve([&](const TestRequest& req, Responder& out) {
    std::lock_guard lock(mu);
    seen.push_back(req);
    out.Respond(200, "ok");
  });
  HttpRequest post = Get("/post");
  post.method = "POST";
  post.body = ToBytes("raw body");
  ASSERT_TRUE(client_.Fetch(post).ok());

  char path[] = "/tmp/ipfly-http-test-XXXXXX";
  int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  std::string file_data(100000, '\0');
  for (size_t i = 0; i < file_data.size(); ++i) file_data[i] = static_cast<char>(i * 7);
  ASSERT_EQ(write(fd, file_data.data(), file_data.size()), static_cast<ssize_t>(file_data.size()));
  close(fd);

  HttpRequest mp = Get("/multi");
  mp.method = "POST";
  MultipartPart a;
  a.name = "file";
  a.filename = "mem%20name";
  a.data = ToBytes("in memory");
  MultipartPart b;
  b.name = "file";
  b.file_path = path;
  b.headers = {"Abspath: /x/y"};
  mp.parts = {a, b};
  auto resp = client_.Fetch(mp);
  ASSERT_TRUE(resp.ok()) << resp.error().ToString();
  unlink(path);

  std::lock_guard lock(mu);
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[0].method, "POST");
  EXPECT_EQ(seen[0].body, "raw body");
  auto parts = seen[1].MultipartParts();
  ASSERT_TRUE(parts.ok()) << parts.error().ToString();
  ASSERT_EQ(parts->size(), 2u);
  EXPECT_EQ((*parts)[0].name, "file");
  EXPECT_EQ((*parts)[0].filename, "mem%20name");
  EXPECT_EQ((*parts)[0].body, "in memory");
  EXPECT_EQ((*parts)[1].filename, std::string(path).substr(5));  // basename by default
  EXPECT_EQ((*parts)[1].body, file_data);
  bool abspath = false;
  for (const auto& [k, v] : (*parts)[1].headers) abspath |= (k == "Abspath" && v == "/x/y");
  EXPECT_TRUE(abspath);
}

TEST_F(HttpClientTest, MissingMultipartFileIsAnError) {
  Serve([](const TestRequest&, Responder& out) { out.Respond(200, "ok"); });
  HttpRequest mp = Get("/");
  mp.method = "POST";
  MultipartPart p;
  p.file_path = "/nonexistent/file";
  mp.parts = {p};
  auto resp = client_.Fetch(mp);
  ASSERT_FALSE(resp.ok());
  EXPECT_EQ(resp.error().code(), Errc::kNotFound);  // ErrnoError(ENOENT)
  EXPECT_NE(resp.error().message().find("/nonexistent/file"), std::string::npos);
  EXPECT_EQ(server_->requests_served(), 0u);
}

TEST_F(HttpClientTest, ManyThreadsShareOneClient) {
  Serve([](const TestRequest& req, Responder& out) { out.Respond(200, req.path); });
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 25; ++i) {
        std::string path = "/t" + std::to_string(t) + "/" + std::to_string(i);
        auto resp = client_.Fetch(Get(path));
        if (resp.ok() && resp->body_text() == path) ++ok;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 200);
  EXPECT_LE(server_->connections_accepted(), 8u + 2u);  // connections are reused
}

TEST(RetryAfterTest, ParsesSecondsAndDates) {
  EXPECT_EQ(ParseRetryAfter("3"), milliseconds(3000));
  EXPECT_EQ(ParseRetryAfter(" 0 "), milliseconds(0));
  EXPECT_FALSE(ParseRetryAfter("soon").has_value());
  EXPECT_FALSE(ParseRetryAfter("").has_value());
  EXPECT_EQ(ParseRetryAfter("Wed, 21 Oct 2015 07:28:00 GMT"), milliseconds(0));  // in the past
  auto future = ParseRetryAfter("Fri, 01 Jan 2100 00:00:00 GMT");
  ASSERT_TRUE(future.has_value());
  EXPECT_GT(*future, milliseconds(1000));
}

TEST(RetryAfterTest, HintSurvivesWrapping) {
  Error e = WithRetryAfter(Unavailable("429 from x"), milliseconds(1500));
  Error wrapped = e.With("context").With("more");
  EXPECT_EQ(wrapped.code(), Errc::kUnavailable);
  ASSERT_TRUE(RetryAfterHint(wrapped).has_value());
  EXPECT_EQ(*RetryAfterHint(wrapped), milliseconds(1500));
  EXPECT_FALSE(RetryAfterHint(Unavailable("plain")).has_value());
}

TEST(HttpStatusErrorTest, MapsStatuses) {
  HttpResponse r;
  r.status = 404;
  EXPECT_EQ(HttpStatusError(r, "x").code(), Errc::kNotFound);
  r.status = 410;
  EXPECT_EQ(HttpStatusError(r, "x").code(), Errc::kNotFound);
  r.status = 451;
  EXPECT_EQ(HttpStatusError(r, "x").code(), Errc::kNotFound);
  r.status = 429;
  EXPECT_EQ(HttpStatusError(r, "x").code(), Errc::kUnavailable);
  r.status = 504;
  EXPECT_EQ(HttpStatusError(r, "x").code(), Errc::kUnavailable);
  r.status = 400;
  EXPECT_EQ(HttpStatusError(r, "x").code(), Errc::kInvalidArgument);
  r.status = 403;
  EXPECT_EQ(HttpStatusError(r, "x").code(), Errc::kPermissionDenied);
  EXPECT_EQ(UrlEscape("a b/c~d"), "a%20b%2Fc~d");
}

}  // namespace
}  // namespace ipfly::fetch
