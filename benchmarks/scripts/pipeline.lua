-- HTTP/1.1 pipelining as TechEmpower runs it: every write carries DEPTH copies of the request
-- (wrk.format() includes the -H headers), and wrk counts each response as one request.
-- Usage: wrk ... -s benchmarks/scripts/pipeline.lua <url> -- 16
init = function(args)
  local depth = tonumber(args[1]) or 1
  local r = {}
  for i = 1, depth do
    r[i] = wrk.format()
  end
  req = table.concat(r)
end

request = function()
  return req
end
