"""A new filter network: a wider ExploitNet, by subclassing LearnabilityFilter and overriding one factory, with a
setting of its own (`width`) that the config gives through filter_net.init_args.

Run it (from the repository root; `filter_net.class_path` takes "module:Class" of any importable module, and
`filter_net.init_args` the subclass's own `__init__` arguments, checked against it before the run starts):

    PYTHONPATH=docs/examples python -m ladalit.run conf=smoke.yaml filter_net.class_path=wide_filter:WideFilter \
        filter_net.init_args.width=256
"""
from torch import nn

from ladalit.method.filter import LearnabilityFilter


class WideExploit(nn.Module):
    def __init__(self, d, width):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(d, width), nn.GELU())
        self.head = nn.Linear(width, 1)

    def forward(self, x):  # -> (score [n], hidden states for ExploreNet [n, h])
        h = self.body(x)
        return self.head(h).squeeze(-1), h


class WideFilter(LearnabilityFilter):
    def __init__(self, *args, width: int = 512, **kwargs):  # the loop passes filter_net.hidden, lr, ... as kwargs
        self.width = width  # before LearnabilityFilter.__init__, which builds the networks
        super().__init__(*args, **kwargs)

    def build_exploit_net(self):
        return WideExploit(self.embed_dim, self.width)
