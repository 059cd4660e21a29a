-- wrk script: raw REGISTER requests, each with a unique Name.
--
--   wrk -t1 -c50 -d10s -s bench/register.lua http://127.0.0.1:17070/
--
-- wrk cannot send an unknown method from a static script, so request() builds
-- each request itself. Before the run, wrk calls request() once in the first
-- thread's Lua state and checks the result with an HTTP parser that knows only
-- the standard methods; that first call returns a GET, which is never sent.
-- Every later call returns a REGISTER with a fresh Name: w<thread>-<counter>.
--
-- The requests carry a Host header so that a plain HTTP/1.1 server (nginx with
-- `return 200`, see bench/nginx.conf) takes the very same bytes; bridgechat
-- ignores the headers it does not use.

local threads = 0   -- main state: threads set up so far
local checked = false
local counter = 0

function setup(thread)
   threads = threads + 1
   thread:set("thread_id", threads)   -- a global in that thread's own state
end

function request()
   if not checked and thread_id == 1 then
      checked = true
      return wrk.format("GET", "/")
   end
   counter = counter + 1
   return "REGISTER / HTTP/1.1\r\nHost: 127.0.0.1\r\nName: w" .. thread_id .. "-" .. counter ..
      "\r\nIP: 127.0.0.1\r\nPort: 9001\r\n\r\n"
end
