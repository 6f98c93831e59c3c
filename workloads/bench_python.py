# The bench's python row (run by Debian's /usr/bin/python3 with PYTHONMALLOC=malloc, so every
# object is a malloc): a dict of 60,000 entries built, written as JSON and read back. About
# two million allocator calls, on stacks 20 to 40 frames deep through the interpreter.
import json

d = {("k%d" % i): [i, str(i), {"v": i * 2}] for i in range(60000)}
s = json.dumps(d)
e = json.loads(s)
print(len(e))
